using System.Diagnostics;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using TransformerInference.Tokenization;
using Xunit;
using Xunit.Abstractions;

namespace TransformerInference.Tests.Reliability;

/// <summary>
/// Seeded mutations of every file format the library reads (torch zip + pickle, safetensors, config.json,
/// generation_config.json, tokenizer.json, SentencePiece models, vocab.json, tokenizer_config.json,
/// model_args.json): byte flips, truncations, inserted garbage, huge numbers, wrong types, invalid UTF-8, deep
/// nesting, self-referencing pickles, zip-slip names, a zip bomb. Every case must load (and then work) or throw a
/// contract exception, within 10 s and 1 GiB of resident memory. 2,000 cases by default; set
/// <c>TI_FUZZ_CASES</c> (e.g. 50000) for a soak and <c>TI_FUZZ_SEED</c> to explore other mutations. A failing case
/// is reported with its number and mutation, and reruns alone with <c>TI_FUZZ_ONLY=number</c>.
/// </summary>
public class FuzzTests : IDisposable
{
    private const int DefaultSeed = 20261130;
    private readonly string _dir = Directory.CreateTempSubdirectory("ti-fuzz-").FullName;
    private readonly ITestOutputHelper _output;

    public FuzzTests(ITestOutputHelper output) => _output = output;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>One file format: where its file lives in a working copy of a fixture folder, how to mutate it, and
    /// what reads it.</summary>
    private sealed record Target(string Name, int Weight, string[] Fixture, string File, Func<Random, byte[], (byte[] Bytes, string How)> Mutate,
        Action<string> Read, string[]? Drop = null);

    private static int EnvInt(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out var v) ? v : fallback;

    [Fact]
    public void EveryMutatedFileLoadsOrThrowsAContractException()
    {
        var cases = EnvInt("TI_FUZZ_CASES", 2000);
        var seed = EnvInt("TI_FUZZ_SEED", DefaultSeed);
        var only = EnvInt("TI_FUZZ_ONLY", -1);
        var targets = Targets();
        var folders = targets.ToDictionary(t => t, Prepare);
        var originals = targets.ToDictionary(t => t, t => File.ReadAllBytes(Path.Combine(folders[t], t.File)));
        var schedule = targets.SelectMany(t => Enumerable.Repeat(t, t.Weight)).ToArray();
        var failures = new List<string>();
        var outcomes = new Dictionary<string, int>();
        const string owned = "/tmp/ti-fuzz-owned"; // what the crafted pickles would create if anything ran them
        File.Delete(owned);
        var clock = Stopwatch.StartNew();
        var slowest = (Seconds: 0.0, Case: "");
        for (var i = 0; i < cases && failures.Count < 20; i++)
        {
            if (only >= 0 && i != only) continue;
            var target = schedule[i % schedule.Length];
            var random = new Random(HashCode.Combine(seed, i));
            var (bytes, how) = target.Mutate(random, originals[target]);
            var folder = folders[target];
            var path = Path.Combine(folder, target.File);
            File.WriteAllBytes(path, bytes);
            var label = $"case {i} ({target.Name}: {how})";
            var start = clock.Elapsed.TotalSeconds;
            var failure = Hostile.Check(label, () => target.Read(folder), IsFileProblem);
            var took = clock.Elapsed.TotalSeconds - start;
            if (took > slowest.Seconds) slowest = (took, label);
            if (failure.Problem is not null) failures.Add(failure.Problem);
            var key = $"{target.Name}: {failure.Thrown?.GetType().Name ?? "loaded"}";
            outcomes[key] = outcomes.GetValueOrDefault(key) + 1;
        }
        _output.WriteLine($"{cases} cases (seed {seed}) in {clock.Elapsed.TotalSeconds:F1} s; slowest {slowest.Seconds:F2} s: {slowest.Case}");
        foreach (var (key, count) in outcomes.OrderBy(o => o.Key, StringComparer.Ordinal)) _output.WriteLine($"  {key}: {count}");
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
        Assert.False(File.Exists(owned), "a crafted pickle ran a command");
    }

    /// <summary>What a bad file may throw under the contract: the file's problem typed, naming the file (an
    /// <see cref="ArgumentException"/> would blame the caller for the file).</summary>
    private static bool IsFileProblem(Exception e) => e is CheckpointException or InvalidDataException or NotSupportedException or FileNotFoundException;

    /// <summary>A working copy of the target's fixture folder (minus files that would change what is read).</summary>
    private string Prepare(Target t)
    {
        var folder = Path.Combine(_dir, t.Name.Replace(' ', '-').Replace('/', '-'));
        Directory.CreateDirectory(folder);
        foreach (var f in Directory.GetFiles(Fixtures.Path_(t.Fixture)))
        {
            var name = Path.GetFileName(f);
            if (name is "expected.json" or "README.md" || (t.Drop?.Contains(name) ?? false)) continue;
            File.Copy(f, Path.Combine(folder, name));
        }
        return folder;
    }

    private static Target[] Targets() => new[]
    {
        new Target("torch zip (HF pytorch_model.bin)", 10, new[] { "hf-tiny", "marian" }, "pytorch_model.bin", MutateTorchZip,
            folder => UseModel(ModelLoader.LoadFolder(folder)), Drop: new[] { "model.safetensors" }),
        new Target("torch zip (seed training checkpoint)", 7, new[] { "seed-tiny" }, "tmodel.pt", MutateTorchZip,
            folder => UseModel(ModelLoader.LoadSeedCheckpoint(Path.Combine(folder, "tmodel.pt"), new ModelLoadOptions { Heads = 4 }))),
        new Target("safetensors (seed_transformer)", 8, new[] { "variants", "serial-seed" }, "model.safetensors", MutateSafetensors,
            folder => UseModel(ModelLoader.LoadFolder(folder))),
        new Target("safetensors (nllb)", 7, new[] { "hf-tiny", "nllb" }, "model.safetensors", MutateSafetensors,
            folder => UseModel(ModelLoader.LoadFolder(folder))),
        new Target("config.json (seed_transformer)", 8, new[] { "variants", "serial-gqa-rmsnorm-rotary-swiglu" }, "config.json", MutateJson,
            folder => UseModel(ModelLoader.LoadFolder(folder))),
        new Target("config.json (marian)", 6, new[] { "hf-tiny", "marian" }, "config.json", MutateJson,
            folder => UseModel(ModelLoader.LoadFolder(folder))),
        new Target("config.json (m2m100)", 6, new[] { "hf-tiny", "m2m100" }, "config.json", MutateJson,
            folder => UseModel(ModelLoader.LoadFolder(folder))),
        new Target("generation_config.json", 8, new[] { "hf-tiny", "marian" }, "generation_config.json", MutateJson,
            folder => ModelLoader.LoadGenerationDefaults(folder)),
        new Target("tokenizer.json", 12, new[] { "seed-tiny" }, "tokenizer_en.json", MutateJson, UseWordLevel),
        new Target("SentencePiece model (marian)", 4, new[] { "hf-tiny", "marian" }, "source.spm", MutateBinary, UseSentencePiece),
        new Target("SentencePiece model (nllb)", 3, new[] { "hf-tiny", "nllb" }, "sentencepiece.bpe.model", MutateBinary, UseSentencePiece),
        new Target("vocab.json", 6, new[] { "hf-tiny", "m2m100" }, "vocab.json", MutateJson, UseSentencePiece),
        new Target("tokenizer_config.json (marian)", 3, new[] { "hf-tiny", "marian" }, "tokenizer_config.json", MutateJson, UseSentencePiece),
        new Target("tokenizer_config.json (nllb)", 6, new[] { "hf-tiny", "nllb" }, "tokenizer_config.json", MutateJson, UseSentencePiece),
        new Target("model_args.json", 6, new[] { "seed-tiny" }, "model_args.json", MutateJson,
            folder => ModelLoader.ReadSeedHeads(Path.Combine(folder, "tmodel.pt"))),
    };

    /// <summary>A model that loaded must also run: a short greedy search from in-vocabulary ids.</summary>
    private static void UseModel(TransformerModel model)
    {
        using (model)
        {
            var source = new[] { model.SosId, Math.Min(5, model.Config.SourceVocabSize - 1), model.EosId }.Take(model.MaxSourceLength).ToArray();
            Generator.Generate(model, new[] { source }, new DecodingOptions { MaxNewTokens = Math.Min(4, model.MaxTargetLength) });
        }
    }

    private static void UseWordLevel(string folder)
    {
        var tokenizer = WordLevelTokenizer.Create(Path.Combine(folder, "tokenizer_en.json"));
        var ids = tokenizer.EncodeToIds("I love you so much");
        tokenizer.Decode(ids);
    }

    private static void UseSentencePiece(string folder)
    {
        var tokenizer = SentencePieceTranslationTokenizer.Create(folder);
        var ids = tokenizer.EncodeSource("I love you so much");
        tokenizer.Decode(ids);
    }

    // Mutations. Each returns the mutated bytes and a short description for the report.

    private static readonly string[] Interesting =
    {
        "0", "-1", "1", "2147483647", "-2147483648", "4294967296", "1000000000", "1e9", "9223372036854775807",
        "1e308", "-1e308", "0.5", "-0", "\"1\"", "\"\"", "null", "true", "false", "[]", "{}", "[[[[[[]]]]]]", "{\"a\": {}}",
    };

    private static (byte[], string) MutateBinary(Random r, byte[] original)
    {
        var bytes = (byte[])original.Clone();
        switch (r.Next(6))
        {
            case 0:
            {
                var n = r.Next(1, 9);
                for (var k = 0; k < n; k++) bytes[r.Next(bytes.Length)] ^= (byte)r.Next(1, 256);
                return (bytes, $"{n} byte flips");
            }
            case 1:
            {
                var at = r.Next(bytes.Length);
                return (bytes[..at], $"truncated to {at} bytes");
            }
            case 2:
            {
                var at = r.Next(bytes.Length);
                var garbage = new byte[r.Next(1, 64)];
                r.NextBytes(garbage);
                return (bytes[..at].Concat(garbage).Concat(bytes[at..]).ToArray(), $"{garbage.Length} garbage bytes at {at}");
            }
            case 3:
            {
                // A 1-, 4- or 8-byte field near the start set to an extreme value (lengths, counts, varints).
                var at = r.Next(Math.Min(bytes.Length, 512));
                var width = new[] { 1, 4, 8 }[r.Next(3)];
                for (var k = 0; k < width && at + k < bytes.Length; k++) bytes[at + k] = r.Next(2) == 0 ? (byte)0xFF : (byte)0x7F;
                return (bytes, $"{width} bytes at {at} set extreme");
            }
            case 4:
            {
                var at = r.Next(bytes.Length);
                var length = Math.Min(bytes.Length - at, r.Next(1, 256));
                return (bytes[..at].Concat(bytes[(at + length)..]).ToArray(), $"{length} bytes deleted at {at}");
            }
            default:
            {
                var at = r.Next(bytes.Length);
                var length = Math.Min(bytes.Length - at, r.Next(1, 256));
                return (bytes[..(at + length)].Concat(bytes[at..]).ToArray(), $"{length} bytes duplicated at {at}");
            }
        }
    }

    private static (byte[], string) MutateJson(Random r, byte[] original)
    {
        switch (r.Next(10))
        {
            case < 4: return MutateJsonValue(r, original);
            case 4:
            {
                // Invalid UTF-8 (or an escaped lone surrogate) inside a string.
                var quotes = Enumerable.Range(0, original.Length).Where(i => original[i] == (byte)'"').ToArray();
                if (quotes.Length == 0) return MutateBinary(r, original);
                var at = quotes[r.Next(quotes.Length)] + 1;
                var bad = new[] { new byte[] { 0xFF }, new byte[] { 0xC3, 0x28 }, new byte[] { 0xED, 0xA0, 0x80 }, "\\udc00"u8.ToArray(), new byte[] { 0xF4, 0x90, 0x80, 0x80 } }[r.Next(5)];
                return (original[..at].Concat(bad).Concat(original[at..]).ToArray(), $"invalid text {Convert.ToHexString(bad)} at {at}");
            }
            case 5:
            {
                // Deep nesting: a value wrapped in arrays, 100 or 100,000 deep.
                var depth = r.Next(2) == 0 ? 100 : 100_000;
                var at = Array.IndexOf(original, (byte)'{');
                if (at < 0) return MutateBinary(r, original);
                var nested = Encoding.UTF8.GetBytes("\"deep\": " + new string('[', depth) + "1" + new string(']', depth) + ",");
                return (original[..(at + 1)].Concat(nested).Concat(original[(at + 1)..]).ToArray(), $"nested {depth} deep");
            }
            default: return MutateBinary(r, original);
        }
    }

    /// <summary>Replaces one value of the document (any depth) by an extreme number, a wrong type or nothing.</summary>
    private static (byte[], string) MutateJsonValue(Random r, byte[] original)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(original);
        }
        catch (System.Text.Json.JsonException)
        {
            return MutateBinary(r, original);
        }
        if (root is null) return MutateBinary(r, original);
        var slots = new List<(JsonNode Parent, string? Key, int Index)>();
        var pending = new Stack<JsonNode>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var node = pending.Pop();
            if (node is JsonObject o)
                foreach (var (k, v) in o) { slots.Add((o, k, -1)); if (v is not null) pending.Push(v); }
            else if (node is JsonArray a)
                for (var i = 0; i < a.Count; i++) { slots.Add((a, null, i)); if (a[i] is not null) pending.Push(a[i]!); }
        }
        if (slots.Count == 0) return MutateBinary(r, original);
        // Prefer the top level, where configs keep their sizes.
        var (parent, key, index) = r.Next(2) == 0 && root is JsonObject top && top.Count > 0
            ? (root, top.ElementAt(r.Next(top.Count)).Key, -1)
            : slots[r.Next(slots.Count)];
        var remove = r.Next(8) == 0;
        var value = Interesting[r.Next(Interesting.Length)];
        if (parent is JsonObject po)
        {
            if (remove) po.Remove(key!);
            else po[key!] = JsonNode.Parse(value);
        }
        else if (parent is JsonArray pa)
        {
            if (remove) pa.RemoveAt(index);
            else pa[index] = JsonNode.Parse(value);
        }
        return (Encoding.UTF8.GetBytes(root.ToJsonString()), remove ? $"removed {key ?? $"[{index}]"}" : $"{key ?? $"[{index}]"} = {value}");
    }

    /// <summary>safetensors: the header's JSON mutated (length rewritten), its length field set wild, or raw bytes.</summary>
    private static (byte[], string) MutateSafetensors(Random r, byte[] original)
    {
        var headerLength = (int)BitConverter.ToUInt64(original, 0);
        var header = original[8..(8 + headerLength)];
        var data = original[(8 + headerLength)..];
        switch (r.Next(4))
        {
            case 0:
            case 1:
            {
                var (mutated, how) = MutateJson(r, header);
                return (BitConverter.GetBytes((ulong)mutated.Length).Concat(mutated).Concat(data).ToArray(), "header " + how);
            }
            case 2:
            {
                var wild = new ulong[] { 0, 1, (ulong)headerLength + 1, (ulong)original.Length, 2_000_000_000, uint.MaxValue, ulong.MaxValue, 1UL << 62 }[r.Next(8)];
                var bytes = (byte[])original.Clone();
                BitConverter.GetBytes(wild).CopyTo(bytes, 0);
                return (bytes, $"header length {wild}");
            }
            default:
            {
                var (bytes, how) = MutateBinary(r, original[..Math.Min(original.Length, 8 + headerLength + 64)]);
                return (bytes.Concat(original.Length > 8 + headerLength + 64 ? original[(8 + headerLength + 64)..] : Array.Empty<byte>()).ToArray(), "head " + how);
            }
        }
    }

    /// <summary>torch zip: the pickle mutated (bytes, integers, crafted objects), entry names changed (zip slip), a
    /// zip bomb, or the archive's raw bytes.</summary>
    private static (byte[], string) MutateTorchZip(Random r, byte[] original)
    {
        var entries = new List<(string Name, byte[] Data)>();
        using (var zip = new ZipArchive(new MemoryStream(original), ZipArchiveMode.Read))
            foreach (var e in zip.Entries)
            {
                using var s = e.Open();
                using var m = new MemoryStream();
                s.CopyTo(m);
                entries.Add((e.FullName, m.ToArray()));
            }
        var pickle = entries.FindIndex(e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal));
        switch (r.Next(12))
        {
            case < 5:
            {
                var (bytes, how) = MutateBinary(r, entries[pickle].Data);
                entries[pickle] = (entries[pickle].Name, bytes);
                return (Hostile.Zip(entries), "pickle " + how);
            }
            case 5:
            case 6:
            {
                // One integer argument of the pickle (element counts, shapes, strides, offsets, memo indices) made extreme.
                var data = entries[pickle].Data;
                var ints = Enumerable.Range(0, data.Length - 5).Where(i => data[i] is (byte)'J' or (byte)'K' or (byte)'M').ToArray();
                var at = ints[r.Next(ints.Length)];
                var width = data[at] == (byte)'K' ? 1 : data[at] == (byte)'M' ? 2 : 4;
                var value = new[] { -1, int.MaxValue, int.MinValue, 1 << 30, 65535, 0 }[r.Next(6)];
                var replaced = data[..at].Concat(new[] { (byte)'J' }).Concat(BitConverter.GetBytes(value)).Concat(data[(at + 1 + width)..]).ToArray();
                entries[pickle] = (entries[pickle].Name, replaced);
                return (Hostile.Zip(entries), $"pickle int at {at} = {value}");
            }
            case 7:
            {
                // Crafted objects inserted as extra dict entries just before the final SETITEMS/STOP.
                var data = entries[pickle].Data;
                var craft = Crafted(r, out var how);
                var end = data.Length - 1; // STOP
                var inserted = data[..(end - 1)].Concat(craft).Concat(data[(end - 1)..]).ToArray();
                entries[pickle] = (entries[pickle].Name, inserted);
                return (Hostile.Zip(entries), "pickle + " + how);
            }
            case 8:
            {
                var i = r.Next(entries.Count);
                var name = new[] { "../" + entries[i].Name, "/tmp/" + entries[i].Name, entries[i].Name.Replace("/", "/../"), "archive/data/../../x" }[r.Next(4)];
                entries[i] = (name, entries[i].Data);
                return (Hostile.Zip(entries), $"entry {i} renamed {name}");
            }
            case 9:
            {
                // A zip bomb: one storage deflated from 32 MiB of zeros (element count to match).
                var i = entries.FindIndex(e => e.Name.Contains("/data/", StringComparison.Ordinal));
                entries[i] = (entries[i].Name, new byte[32 << 20]);
                return (Hostile.Zip(entries, CompressionLevel.Fastest), $"zip bomb in {entries[i].Name}");
            }
            default:
            {
                var (bytes, how) = MutateBinary(r, original);
                return (bytes, "archive " + how);
            }
        }
    }

    /// <summary>A key/value pair that, unpickled by Python, would run a command or loop: the reader must only build
    /// inert placeholders.</summary>
    private static byte[] Crafted(Random r, out string how)
    {
        var kind = r.Next(7);
        how = new[] { "os.system REDUCE", "subprocess STACK_GLOBAL", "eval INST", "exec OBJ", "NEWOBJ", "BUILD", "self-reference" }[kind];
        var w = new PickleWriter();
        w.Str("crafted");
        switch (kind)
        {
            case 0: w.Global("os", "system").Mark().Str("touch /tmp/ti-fuzz-owned").Tuple().Reduce(); break;
            case 1: w.StackGlobal("subprocess", "check_call").Mark().Mark().Str("touch").Str("/tmp/ti-fuzz-owned").Op('l').Tuple().Reduce(); break;
            case 2: w.Mark().Str("__import__('os').system('touch /tmp/ti-fuzz-owned')").Op('i').Raw("builtins\neval\n"u8.ToArray()); break;
            case 3: w.Mark().Global("builtins", "exec").Str("open('/tmp/ti-fuzz-owned','w')").Op('o'); break;
            case 4: w.Global("os", "system").Mark().Str("touch /tmp/ti-fuzz-owned").Tuple().Op(0x81); break;
            case 5: w.Global("builtins", "object").Op(')').Reduce().Op('}').Mark().Str("__setstate__").Global("os", "system").Op('u').Op('b'); break;
            default: w.Op(']').Op('q').Byte(250).Op('h').Byte(250).Op('a'); break;
        }
        return w.ToArray()[2..]; // without the PROTO header
    }
}
