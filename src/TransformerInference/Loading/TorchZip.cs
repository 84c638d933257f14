using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Reads the tensors of a <c>torch.save</c> zip archive without running anything it names. Python's pickle is a
/// small stack machine whose GLOBAL / REDUCE / BUILD opcodes call arbitrary functions; this reader understands
/// the opcodes but calls nothing: the only callables it gives meaning to are <c>collections.OrderedDict</c>,
/// <c>torch._utils._rebuild_tensor(_v2)</c> and <c>torch._utils._rebuild_parameter</c>; every other one
/// (<c>os.system</c>, <c>builtins.eval</c>, ...) yields an inert placeholder. Persistent ids name storages inside
/// the archive only (a plain file name under <c>&lt;prefix&gt;/data/</c>).
/// Every size is checked before anything is allocated: a storage's element count against its zip entry, a tensor's
/// shape and strides against its storage, and the archive's total uncompressed size against
/// <see cref="MaxExpansion"/> × the file's size. Nothing recurses over the pickled structure.
/// </summary>
internal static partial class TorchZip
{
    /// <summary>The archive's entries may hold at most this many times the file's size (plus 1 MiB) once
    /// uncompressed; <c>torch.save</c> stores them uncompressed (ratio 1), so only a zip bomb exceeds it.</summary>
    public const int MaxExpansion = 4;

    /// <summary>The tensors of the archive's top-level dict (or of its <c>model_state_dict</c> entry) by name; every
    /// other tensor it held is disposed.</summary>
    public static Dictionary<string, Tensor> ReadStateDict(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint file not found: '{path}'.", path);
        using var file = File.OpenRead(path);
        var signature = new byte[4];
        if (file.ReadAtLeast(signature, 4, throwOnEndOfStream: false) < 4 || signature[0] != 0x50 || signature[1] != 0x4b)
            throw new CheckpointException("Not a zip-format torch.save file (the legacy format is not supported; re-save with a current PyTorch)", path);
        file.Position = 0;
        ZipArchive archive;
        try
        {
            archive = new ZipArchive(file, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException or NotSupportedException)
        {
            throw new CheckpointException($"Not a readable zip archive: {e.Message}", path, inner: e);
        }
        using (archive)
        {
            var reader = new Reader(archive, file.Length, path);
            try
            {
                return reader.Read();
            }
            catch (Exception e) when (e is InvalidDataException or IOException)
            {
                reader.DisposeAll(keep: null);
                throw new CheckpointException($"Cannot read the archive: {e.Message}", path, inner: e);
            }
            catch
            {
                reader.DisposeAll(keep: null);
                throw;
            }
        }
    }

    [GeneratedRegex("^[A-Za-z0-9_.]{1,64}$")]
    private static partial Regex StorageKey();

    /// <summary>A reference to one storage: its zip entry and element type (bytes read on first use).</summary>
    private sealed record Storage(string Key, ScalarType DType, long Count);

    /// <summary>A Python object this reader does not construct: a callable's name, or the result of calling one
    /// (never called), with the state a BUILD gave it.</summary>
    private sealed class Inert(string name)
    {
        public string Name { get; } = name;
        public override string ToString() => Name;
    }

    /// <summary>A Python dict (also OrderedDict), in insertion order.</summary>
    private sealed class PyDict
    {
        public List<KeyValuePair<object?, object?>> Items { get; } = new();
    }

    /// <summary>The pickle's MARK: separates stack items.</summary>
    private sealed class Mark
    {
        public static readonly Mark Instance = new();
    }

    private sealed class Reader(ZipArchive archive, long fileLength, string path)
    {
        private readonly List<Tensor> _made = new(); // every tensor created, to dispose what the caller does not keep
        private readonly Dictionary<string, Tensor> _storages = new(StringComparer.Ordinal);
        private readonly Dictionary<string, ZipArchiveEntry> _entries = new(StringComparer.Ordinal);
        private string _prefix = "";

        public CheckpointException Bad(string message, Exception? inner = null) => new(message, path, inner: inner);

        public Dictionary<string, Tensor> Read()
        {
            long total = 0, limit = MaxExpansion * fileLength + (1L << 20);
            ZipArchiveEntry? pickle = null;
            foreach (var entry in archive.Entries)
            {
                total += entry.Length;
                if (entry.Length < 0 || total > limit)
                    throw Bad($"The archive's entries would expand to more than {limit} bytes ({MaxExpansion}× the file's size); refusing a possible zip bomb");
                _entries.TryAdd(entry.FullName, entry);
                var slash = entry.FullName.IndexOf('/');
                if (pickle is null && slash > 0 && entry.FullName[(slash + 1)..] == "data.pkl") pickle = entry;
            }
            if (pickle is null) throw Bad("Not a torch.save archive: no <name>/data.pkl entry");
            _prefix = pickle.FullName[..(pickle.FullName.IndexOf('/') + 1)];
            var top = new Unpickler(ReadEntry(pickle), this).Load();

            if (top is not PyDict dict) throw Bad($"The checkpoint holds a {Describe(top)}, not a dict of tensors");
            if (Lookup(dict, "model_state_dict") is { } inner)
                dict = inner as PyDict ?? throw Bad("'model_state_dict' is not a dictionary");
            var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            var handed = new HashSet<Tensor>(ReferenceEqualityComparer.Instance);
            foreach (var (key, value) in dict.Items)
            {
                if (key is not string name || value is not Tensor t) continue;
                // The same tensor object under two names (tied weights): each name gets its own handle.
                var own = handed.Add(t) ? t : t.alias();
                if (!ReferenceEquals(own, t)) _made.Add(own);
                if (result.TryGetValue(name, out var earlier)) handed.Remove(earlier);
                result[name] = own;
            }
            if (result.Count == 0)
                throw Bad("The file holds no model tensors (neither a state dict nor a dict with 'model_state_dict')");
            DisposeAll(keep: new HashSet<Tensor>(result.Values, ReferenceEqualityComparer.Instance));
            return result;
        }

        private static object? Lookup(PyDict dict, string key)
        {
            foreach (var (k, v) in dict.Items)
                if (k is string s && s == key) return v;
            return null;
        }

        /// <summary>Disposes every tensor made except <paramref name="keep"/> (storages: views keep their memory alive).</summary>
        public void DisposeAll(HashSet<Tensor>? keep)
        {
            foreach (var t in _made)
                if (keep is null || !keep.Contains(t)) t.Dispose();
            foreach (var s in _storages.Values) s.Dispose();
            _made.Clear();
            _storages.Clear();
        }

        /// <summary>An entry's bytes: exactly its declared length, never more (the declared total is bounded above).</summary>
        private byte[] ReadEntry(ZipArchiveEntry entry)
        {
            if (entry.Length > Array.MaxLength) throw Bad($"Entry '{entry.FullName}' is too large to read ({entry.Length} bytes)");
            var bytes = new byte[entry.Length];
            try
            {
                using var stream = entry.Open();
                var read = stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
                if (read < bytes.Length) throw Bad($"Entry '{entry.FullName}' is truncated ({read} of {bytes.Length} bytes)");
            }
            catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
            {
                throw Bad($"Entry '{entry.FullName}' cannot be read: {e.Message}", e);
            }
            return bytes;
        }

        /// <summary>persistent_load: <c>('storage', torch.FloatStorage, key, location, count)</c>.</summary>
        public Storage PersistentLoad(object? pid)
        {
            if (pid is not object?[] { Length: >= 5 } t || t[0] is not "storage")
                throw Bad($"Unsupported persistent id {Describe(pid)} (only tensor storages are read)");
            if (t[2] is not string key || !StorageKey().IsMatch(key) || key is "." or "..")
                throw Bad($"A storage key must be a plain file name inside the archive, got {Describe(t[2])}");
            var dtype = t[1] is Inert storageType ? StorageType(storageType.Name)
                : throw Bad($"Unsupported storage type {Describe(t[1])}");
            if (t[4] is not long count || count < 0) throw Bad($"Storage '{key}' has an invalid element count {Describe(t[4])}");
            if (!_entries.TryGetValue(_prefix + "data/" + key, out var entry))
                throw Bad($"Storage '{key}' is not in the archive (no entry '{_prefix}data/{key}')");
            var size = ElementSize(dtype);
            if (count > entry.Length / size || count * size != entry.Length)
                throw Bad($"Storage '{key}' claims {count} elements of {dtype}; its entry holds {entry.Length} bytes");
            return new Storage(key, dtype, count);
        }

        private Tensor StorageTensor(Storage s)
        {
            if (_storages.TryGetValue(s.Key, out var t)) return t;
            var entry = _entries[_prefix + "data/" + s.Key];
            t = empty(new[] { s.Count }, s.DType).DetachFromDisposeScope();
            _storages[s.Key] = t;
            var size = ElementSize(s.DType);
            var chunkElements = Math.Max(1, (16 << 20) / size);
            var buffer = new byte[Math.Min(entry.Length, chunkElements * size)];
            try
            {
                using var stream = entry.Open();
                for (long at = 0; at < s.Count; at += chunkElements)
                {
                    var n = (int)Math.Min(chunkElements, s.Count - at);
                    var span = buffer.AsSpan(0, n * size);
                    if (stream.ReadAtLeast(span, span.Length, throwOnEndOfStream: false) < span.Length)
                        throw Bad($"Storage '{s.Key}' is truncated");
                    using var part = t.narrow(0, at, n);
                    part.bytes = span;
                }
            }
            catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
            {
                throw Bad($"Storage '{s.Key}' cannot be read: {e.Message}", e);
            }
            return t;
        }

        /// <summary>torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]).</summary>
        public Tensor RebuildTensor(object?[] args)
        {
            if (args.Length < 4 || args[0] is not Storage storage)
                throw Bad("A tensor is rebuilt from something that is not a storage");
            if (args[1] is not long offset || offset < 0) throw Bad($"Tensor on storage '{storage.Key}' has an invalid offset {Describe(args[1])}");
            var shape = Longs(args[2], "shape", storage.Key);
            var stride = Longs(args[3], "stride", storage.Key);
            if (shape.Length != stride.Length || shape.Length > 16)
                throw Bad($"Tensor on storage '{storage.Key}' has shape rank {shape.Length} and stride rank {stride.Length}");
            if (shape.All(d => d > 0))
            {
                // The last element the view reads must lie inside the storage.
                long last = offset;
                try
                {
                    checked
                    {
                        for (var i = 0; i < shape.Length; i++) last += (shape[i] - 1) * stride[i];
                    }
                }
                catch (OverflowException e)
                {
                    throw Bad($"Tensor on storage '{storage.Key}' has a shape/stride that overflows", e);
                }
                if (last >= storage.Count)
                    throw Bad($"Tensor [{string.Join(", ", shape)}] with strides [{string.Join(", ", stride)}] at offset {offset} reads past its storage '{storage.Key}' of {storage.Count} elements");
            }
            var view = StorageTensor(storage).as_strided(shape, stride, offset).DetachFromDisposeScope();
            _made.Add(view);
            return view;
        }

        private long[] Longs(object? value, string what, string key)
        {
            if (value is not object?[] items) throw Bad($"Tensor on storage '{key}' has a {what} that is not a tuple: {Describe(value)}");
            var result = new long[items.Length];
            for (var i = 0; i < items.Length; i++)
                result[i] = items[i] is long v && v >= 0 ? v : throw Bad($"Tensor on storage '{key}' has an invalid {what} entry {Describe(items[i])}");
            return result;
        }

        private ScalarType StorageType(string name) => name switch
        {
            "torch.FloatStorage" => ScalarType.Float32,
            "torch.DoubleStorage" => ScalarType.Float64,
            "torch.HalfStorage" => ScalarType.Float16,
            "torch.BFloat16Storage" => ScalarType.BFloat16,
            "torch.LongStorage" => ScalarType.Int64,
            "torch.IntStorage" => ScalarType.Int32,
            "torch.ShortStorage" => ScalarType.Int16,
            "torch.CharStorage" => ScalarType.Int8,
            "torch.ByteStorage" => ScalarType.Byte,
            "torch.BoolStorage" => ScalarType.Bool,
            _ => throw Bad($"Unsupported storage type '{name}'"),
        };

        private static int ElementSize(ScalarType t) => t switch
        {
            ScalarType.Float64 or ScalarType.Int64 => 8,
            ScalarType.Float32 or ScalarType.Int32 => 4,
            ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
            _ => 1,
        };

        /// <summary>A short description of a pickled value for messages (never its whole contents).</summary>
        public static string Describe(object? value) => value switch
        {
            null => "None",
            string s => "'" + (s.Length > 40 ? s[..40] + "…" : s) + "'",
            long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
            Inert i => i.Name,
            object?[] t => $"tuple of {t.Length}",
            List<object?> l => $"list of {l.Count}",
            PyDict d => $"dict of {d.Items.Count}",
            Tensor => "tensor",
            _ => value.GetType().Name,
        };
    }

    /// <summary>The pickle stack machine (protocols 2–5, the opcodes torch.save and Python's pickle emit), calling
    /// nothing. Memory use is bounded by the pickle's length: every length field is checked against the bytes left.</summary>
    private sealed class Unpickler(byte[] data, Reader owner)
    {
        private readonly List<object?> _stack = new();
        private readonly Stack<int> _marks = new();
        private readonly Dictionary<long, object?> _memo = new();
        private int _at;

        private CheckpointException Bad(string message) => owner.Bad($"The pickle (data.pkl) is malformed at byte {_at}: {message}");

        public object? Load()
        {
            while (true)
            {
                var op = Byte();
                switch (op)
                {
                    case 0x80: Byte(); break; // PROTO
                    case 0x95: Bytes(8); break; // FRAME (a length hint)
                    case (byte)'.': // STOP
                        if (_stack.Count != 1) throw Bad($"STOP with {_stack.Count} values on the stack");
                        return _stack[0];
                    case (byte)'(': _marks.Push(_stack.Count); break; // MARK
                    case (byte)'0': Pop(); break; // POP
                    case (byte)'1': PopMark(); break; // POP_MARK
                    case (byte)'2': Push(Peek()); break; // DUP
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break; // NEWTRUE
                    case 0x89: Push(false); break; // NEWFALSE
                    case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Bytes(4))); break; // BININT
                    case (byte)'K': Push((long)Byte()); break; // BININT1
                    case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Bytes(2))); break; // BININT2
                    case 0x8a: Push(Long(Byte())); break; // LONG1
                    case 0x8b: Push(Long(Length(4))); break; // LONG4
                    case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Bytes(8))); break; // BINFLOAT
                    case (byte)'X': Push(Text(Length(4))); break; // BINUNICODE
                    case 0x8c: Push(Text(Byte())); break; // SHORT_BINUNICODE
                    case 0x8d: Push(Text(Length(8))); break; // BINUNICODE8
                    case (byte)'T': Push(Latin1(Length(4))); break; // BINSTRING
                    case (byte)'U': Push(Latin1(Byte())); break; // SHORT_BINSTRING
                    case (byte)'B': Push(Bytes(Length(4)).ToArray()); break; // BINBYTES
                    case (byte)'C': Push(Bytes(Byte()).ToArray()); break; // SHORT_BINBYTES
                    case 0x8e or 0x96: Push(Bytes(Length(8)).ToArray()); break; // BINBYTES8, BYTEARRAY8
                    case (byte)')': Push(Array.Empty<object?>()); break; // EMPTY_TUPLE
                    case (byte)'t': Push(PopMark().ToArray()); break; // TUPLE
                    case 0x85: Push(new[] { Pop() }); break; // TUPLE1
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; } // TUPLE2
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
                    case (byte)']' or 0x8f: Push(new List<object?>()); break; // EMPTY_LIST, EMPTY_SET
                    case (byte)'l' or 0x91: Push(PopMark()); break; // LIST, FROZENSET
                    case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; } // APPEND
                    case (byte)'e' or 0x90: { var items = PopMark(); AsList(Peek()).AddRange(items); break; } // APPENDS, ADDITEMS
                    case (byte)'}': Push(new PyDict()); break; // EMPTY_DICT
                    case (byte)'d': { var d = new PyDict(); AddPairs(d, PopMark()); Push(d); break; } // DICT
                    case (byte)'s': { var v = Pop(); var k = Pop(); AsDict(Peek()).Items.Add(new(k, v)); break; } // SETITEM
                    case (byte)'u': { var items = PopMark(); AddPairs(AsDict(Peek()), items); break; } // SETITEMS
                    case (byte)'c': Push(Global(Line(), Line())); break; // GLOBAL
                    case 0x93: { var name = Pop(); var module = Pop(); Push(Global(module as string ?? throw Bad("STACK_GLOBAL needs strings"), name as string ?? throw Bad("STACK_GLOBAL needs strings"))); break; }
                    case (byte)'R': { var args = Pop(); var callable = Pop(); Push(Reduce(callable, args)); break; } // REDUCE
                    case 0x81: { var args = Pop(); var cls = Pop(); Push(Reduce(cls, args)); break; } // NEWOBJ
                    case 0x92: { Pop(); var args = Pop(); var cls = Pop(); Push(Reduce(cls, args)); break; } // NEWOBJ_EX
                    case (byte)'i': { var g = Global(Line(), Line()); Push(Reduce(g, PopMark().ToArray())); break; } // INST
                    case (byte)'o': { var items = PopMark(); if (items.Count == 0) throw Bad("OBJ without a class"); Push(Reduce(items[0], items.Skip(1).ToArray())); break; } // OBJ
                    case (byte)'b': Pop(); break; // BUILD: the state of an object we do not construct (OrderedDict metadata)
                    case (byte)'Q': Push(owner.PersistentLoad(Pop())); break; // BINPERSID
                    case (byte)'q': _memo[Byte()] = Peek(); break; // BINPUT
                    case (byte)'r': _memo[BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4))] = Peek(); break; // LONG_BINPUT
                    case 0x94: _memo[_memo.Count] = Peek(); break; // MEMOIZE
                    case (byte)'h': Push(Get(Byte())); break; // BINGET
                    case (byte)'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(Bytes(4)))); break; // LONG_BINGET
                    default: throw Bad($"opcode 0x{op:x2} is not supported");
                }
            }
        }

        private object? Global(string module, string name) => (module, name) switch
        {
            ("collections", "OrderedDict") => new Inert("collections.OrderedDict"),
            _ => new Inert(module + "." + name),
        };

        /// <summary>REDUCE and its relatives: only building a dict or a tensor has a meaning; any other call is inert.</summary>
        private object? Reduce(object? callable, object? args)
        {
            var name = (callable as Inert)?.Name;
            var list = args as object?[] ?? (args is List<object?> l ? l.ToArray() : Array.Empty<object?>());
            switch (name)
            {
                case "collections.OrderedDict" or "builtins.dict":
                    return new PyDict();
                case "torch._utils._rebuild_tensor_v2" or "torch._utils._rebuild_tensor":
                    return owner.RebuildTensor(list);
                case "torch._utils._rebuild_parameter" when list.Length > 0 && list[0] is Tensor data:
                    return data;
                default:
                    return new Inert($"{name ?? Reader.Describe(callable)}(...)");
            }
        }

        private void AddPairs(PyDict dict, List<object?> items)
        {
            if (items.Count % 2 != 0) throw Bad("a dict needs key/value pairs");
            for (var i = 0; i < items.Count; i += 2) dict.Items.Add(new(items[i], items[i + 1]));
        }

        private List<object?> AsList(object? value) => value as List<object?> ?? throw Bad($"APPEND to a {Reader.Describe(value)}");
        private PyDict AsDict(object? value) => value as PyDict ?? throw Bad($"SETITEM on a {Reader.Describe(value)}");

        private object? Get(long index) => _memo.TryGetValue(index, out var v) ? v : throw Bad($"memo entry {index} was never stored");

        private void Push(object? value) => _stack.Add(value);

        private object? Peek() => _stack.Count > (_marks.Count > 0 ? _marks.Peek() : 0) ? _stack[^1] : throw Bad("the stack is empty");

        private object? Pop()
        {
            var v = Peek();
            _stack.RemoveAt(_stack.Count - 1);
            return v;
        }

        private List<object?> PopMark()
        {
            if (_marks.Count == 0) throw Bad("no MARK to pop to");
            var start = _marks.Pop();
            var items = _stack.GetRange(start, _stack.Count - start);
            _stack.RemoveRange(start, _stack.Count - start);
            return items;
        }

        private byte Byte() => _at < data.Length ? data[_at++] : throw Bad("unexpected end (no STOP)");

        private ReadOnlySpan<byte> Bytes(long count)
        {
            if (count < 0 || count > data.Length - _at) throw Bad($"a length of {count} runs past the end");
            var span = data.AsSpan(_at, (int)count);
            _at += (int)count;
            return span;
        }

        private long Length(int width)
        {
            var raw = Bytes(width);
            var value = width == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(raw) : (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(raw), long.MaxValue);
            return value <= data.Length - _at ? value : throw Bad($"a length of {value} runs past the end");
        }

        /// <summary>LONG1/LONG4: two's complement little-endian; values beyond 64 bits stay inert.</summary>
        private object Long(long count)
        {
            var raw = Bytes(count);
            if (raw.Length > 8) return new Inert("int");
            long v = 0;
            for (var i = raw.Length - 1; i >= 0; i--) v = (v << 8) | raw[i];
            if (raw.Length is > 0 and < 8 && (raw[^1] & 0x80) != 0) v -= 1L << (8 * raw.Length);
            return v;
        }

        private string Text(long count)
        {
            try
            {
                return new UTF8Encoding(false, true).GetString(Bytes(count));
            }
            catch (DecoderFallbackException)
            {
                throw Bad("a string is not valid UTF-8");
            }
        }

        private string Latin1(long count) => Encoding.Latin1.GetString(Bytes(count));

        private string Line()
        {
            var end = Array.IndexOf(data, (byte)'\n', _at);
            if (end < 0 || end - _at > 256) throw Bad("a GLOBAL name is not a short line");
            var s = Encoding.ASCII.GetString(data, _at, end - _at);
            _at = end + 1;
            return s;
        }
    }
}
