using System.Buffers.Binary;
using System.Text.Json;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Reads a <c>.safetensors</c> file: an 8-byte little-endian header length, a JSON header mapping names to
/// <c>{dtype, shape, data_offsets}</c>, then the bytes. The whole header is validated before any tensor is
/// allocated: its length against the file's (and <see cref="MaxHeaderBytes"/>), each dtype, each shape's byte size
/// against its offsets, and the offsets against the data that follows.
/// </summary>
internal static class SafetensorsFile
{
    /// <summary>Longest header read (100 MB, the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private sealed record Entry(string Name, ScalarType DType, long[] Shape, long Begin, long End);

    public static Dictionary<string, Tensor> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file not found: '{path}'.", path);
        using var file = File.OpenRead(path);
        var entries = ReadHeader(file, path, out var dataStart);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            var buffer = new byte[16 << 20];
            foreach (var e in entries)
            {
                var t = empty(e.Shape, e.DType).DetachFromDisposeScope();
                result[e.Name] = t;
                var bytes = e.End - e.Begin;
                if (bytes == 0) continue;
                file.Position = dataStart + e.Begin;
                // Fill the tensor through 1-D views of at most one buffer each (tensors may exceed 2 GiB).
                using var flat = t.view(-1);
                var elementSize = bytes / flat.shape[0];
                var perChunk = buffer.Length / elementSize;
                for (long at = 0; at < flat.shape[0]; at += perChunk)
                {
                    var n = Math.Min(perChunk, flat.shape[0] - at);
                    var span = buffer.AsSpan(0, (int)(n * elementSize));
                    if (file.ReadAtLeast(span, span.Length, throwOnEndOfStream: false) < span.Length)
                        throw new CheckpointException("The file ends inside the tensor's data", path, e.Name);
                    using var part = flat.narrow(0, at, n);
                    part.bytes = span;
                }
            }
            return result;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    private static List<Entry> ReadHeader(FileStream file, string path, out long dataStart)
    {
        var length = file.Length;
        var prefix = new byte[8];
        if (file.ReadAtLeast(prefix, 8, throwOnEndOfStream: false) < 8)
            throw new CheckpointException($"Not a safetensors file: {length} bytes, shorter than the 8-byte header length", path);
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(length - 8) || headerLength > MaxHeaderBytes)
            throw new CheckpointException(
                $"The safetensors header length {headerLength} exceeds the file ({length} bytes) or the {MaxHeaderBytes}-byte limit", path);
        var header = new byte[headerLength];
        file.ReadExactly(header);
        dataStart = 8 + (long)headerLength;
        var dataLength = length - dataStart;

        using var doc = UntrustedJson.Parse(header, (message, e) => new CheckpointException($"The safetensors header: {message}", path, inner: e));
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new CheckpointException("The safetensors header must be a JSON object", path);
        var entries = new List<Entry>();
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__") continue;
            var name = property.Name;
            var v = property.Value;
            CheckpointException Bad(string what) => new($"The safetensors header entry is invalid: {what}", path, name);
            if (v.ValueKind != JsonValueKind.Object) throw Bad("not an object");
            var dtypeName = v.TryGetProperty("dtype", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString()! : throw Bad("no dtype string");
            var (dtype, size) = dtypeName switch
            {
                "F64" => (ScalarType.Float64, 8),
                "F32" => (ScalarType.Float32, 4),
                "F16" => (ScalarType.Float16, 2),
                "BF16" => (ScalarType.BFloat16, 2),
                "I64" => (ScalarType.Int64, 8),
                "I32" => (ScalarType.Int32, 4),
                "I16" => (ScalarType.Int16, 2),
                "I8" => (ScalarType.Int8, 1),
                "U8" => (ScalarType.Byte, 1),
                "BOOL" => (ScalarType.Bool, 1),
                _ => throw Bad($"dtype '{dtypeName}' is not supported"),
            };
            if (!v.TryGetProperty("shape", out var s) || s.ValueKind != JsonValueKind.Array || s.GetArrayLength() > 16)
                throw Bad("no shape array (of at most 16 dimensions)");
            var shape = new long[s.GetArrayLength()];
            var i = 0;
            foreach (var dim in s.EnumerateArray())
                shape[i++] = dim.ValueKind == JsonValueKind.Number && dim.TryGetInt64(out var n) && n >= 0 ? n : throw Bad($"shape entry {dim.GetRawText()}");
            if (!v.TryGetProperty("data_offsets", out var o) || o.ValueKind != JsonValueKind.Array || o.GetArrayLength() != 2)
                throw Bad("no data_offsets pair");
            long Offset(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out var n) && n >= 0 ? n : throw Bad($"offset {e.GetRawText()}");
            var begin = Offset(o[0]);
            var end = Offset(o[1]);
            if (begin > end || end > dataLength)
                throw Bad($"data_offsets [{begin}, {end}] lie outside the {dataLength} data bytes");
            // The shape's byte size, stopping as soon as it exceeds the bytes the offsets give it (no overflow).
            long bytes = size;
            foreach (var dim in shape)
            {
                if (dim == 0) { bytes = 0; break; }
                if (bytes > (end - begin) / dim) { bytes = -1; break; }
                bytes *= dim;
            }
            if (bytes != end - begin)
                throw Bad($"shape [{string.Join(", ", shape)}] of {dtypeName} does not fit data_offsets [{begin}, {end}]");
            entries.Add(new Entry(name, dtype, shape, begin, end));
        }
        return entries;
    }
}
