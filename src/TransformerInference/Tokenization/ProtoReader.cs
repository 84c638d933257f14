namespace TransformerInference.Tokenization;

/// <summary>Just enough of the protobuf wire format to find fields of a message.</summary>
internal ref struct ProtoReader(ReadOnlySpan<byte> data)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _pos;

    public bool Next(out int field, out int wireType)
    {
        if (_pos >= _data.Length)
        {
            field = wireType = 0;
            return false;
        }

        ulong key = Varint();
        field = (int)(key >> 3);
        wireType = (int)(key & 7);
        return true;
    }

    public ulong Varint()
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            byte b = _data[_pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        throw new InvalidDataException("bad varint");
    }

    public ReadOnlySpan<byte> Bytes()
    {
        int length = checked((int)Varint());
        ReadOnlySpan<byte> bytes = _data.Slice(_pos, length);
        _pos += length;
        return bytes;
    }

    public float Float32()
    {
        float value = System.Buffers.Binary.BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(_pos, 4));
        _pos += 4;
        return value;
    }

    public void Skip(int wireType)
    {
        switch (wireType)
        {
            case 0: Varint(); break;
            case 1: _pos += 8; break;
            case 2: Bytes(); break;
            case 5: _pos += 4; break;
            default: throw new InvalidDataException($"unsupported protobuf wire type {wireType}");
        }

        if (_pos > _data.Length)
        {
            throw new InvalidDataException("truncated message");
        }
    }
}
