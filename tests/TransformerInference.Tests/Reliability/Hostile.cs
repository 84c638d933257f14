using System.Diagnostics;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using TorchSharp;
using TransformerInference.Loading;
using Xunit;

namespace TransformerInference.Tests.Reliability;

/// <summary>Writes Python pickles opcode by opcode (protocol 2), so hostile checkpoints are made in C# and the tests
/// need no Python.</summary>
internal sealed class PickleWriter
{
    private readonly MemoryStream _bytes = new();

    public PickleWriter() => Op(0x80).Byte(2); // PROTO 2

    public PickleWriter Op(byte op) => Byte(op);
    public PickleWriter Op(char op) => Byte((byte)op);

    public PickleWriter Byte(byte b)
    {
        _bytes.WriteByte(b);
        return this;
    }

    public PickleWriter Raw(byte[] bytes)
    {
        _bytes.Write(bytes);
        return this;
    }

    public PickleWriter Mark() => Op('(');
    public PickleWriter Tuple() => Op('t');
    public PickleWriter Reduce() => Op('R');
    public PickleWriter Stop() => Op('.');

    public PickleWriter Str(string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        Op('X');
        Raw(BitConverter.GetBytes(b.Length));
        return Raw(b);
    }

    public PickleWriter Int(long v)
    {
        if (v is >= int.MinValue and <= int.MaxValue)
        {
            Op('J');
            return Raw(BitConverter.GetBytes((int)v));
        }
        Op(0x8a).Byte(8);
        return Raw(BitConverter.GetBytes(v));
    }

    public PickleWriter Global(string module, string name) => Op('c').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    public PickleWriter StackGlobal(string module, string name) => Str(module).Str(name).Op(0x93);

    /// <summary>INST: MARK, the arguments, then <c>i module\nname\n</c> (Python calls <c>module.name(*args)</c>).</summary>
    public PickleWriter Inst(string module, string name) => Op('i').Raw(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));

    /// <summary>PERSID: a protocol-0 persistent id given as a text line.</summary>
    public PickleWriter PersId(string id) => Op('P').Raw(Encoding.ASCII.GetBytes(id + "\n"));

    public PickleWriter Ints(IEnumerable<long> values)
    {
        Mark();
        foreach (var v in values) Int(v);
        return Tuple();
    }

    /// <summary><c>torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())</c>.</summary>
    public PickleWriter Tensor(string storageKey, long storageElements, long[] shape, long[]? stride = null, long offset = 0,
        string storageType = "FloatStorage")
    {
        stride ??= ContiguousStrides(shape);
        Global("torch._utils", "_rebuild_tensor_v2").Mark();
        Mark().Str("storage").Global("torch", storageType).Str(storageKey).Str("cpu").Int(storageElements).Tuple().Op('Q');
        Int(offset).Ints(shape).Ints(stride).Op(0x89);
        Global("collections", "OrderedDict").Op(')').Reduce();
        return Tuple().Reduce();
    }

    public static long[] ContiguousStrides(long[] shape)
    {
        var stride = new long[shape.Length];
        long s = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            stride[i] = s;
            s *= shape[i];
        }
        return stride;
    }

    public byte[] ToArray() => _bytes.ToArray();
}

/// <summary>torch.save-style zip archives, hostile files, and the time and memory budget each case must keep.</summary>
internal static class Hostile
{
    /// <summary>A zip archive with the given entries (stored, as torch.save writes them, unless said otherwise).</summary>
    public static byte[] Zip(IEnumerable<(string Name, byte[] Data)> entries, CompressionLevel level = CompressionLevel.NoCompression)
    {
        using var buffer = new MemoryStream();
        using (var zip = new ZipArchive(buffer, ZipArchiveMode.Create, leaveOpen: true))
        {
            foreach (var (name, data) in entries)
            {
                using var stream = zip.CreateEntry(name, level).Open();
                stream.Write(data);
            }
        }
        return buffer.ToArray();
    }

    /// <summary>The state dict of a torch.save file as (name, float32 bytes, shape), read by our reader.</summary>
    public static List<(string Name, byte[] Data, long[] Shape)> StateDict(string path)
    {
        var tensors = TorchZip.ReadStateDict(path);
        try
        {
            return tensors.Select(kv =>
            {
                using var t = kv.Value.to(torch.ScalarType.Float32).contiguous();
                return (kv.Key, t.bytes.ToArray(), t.shape);
            }).ToList();
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    /// <summary>A torch.save zip of a training checkpoint: <c>{'model_state_dict': {...}, extras...}</c>, where
    /// <paramref name="extras"/> writes further key/value pairs (between MARK and SETITEMS).</summary>
    public static byte[] Checkpoint(IReadOnlyList<(string Name, byte[] Data, long[] Shape)> tensors, Action<PickleWriter>? extras = null)
    {
        var p = new PickleWriter();
        p.Op('}').Mark().Str("model_state_dict");
        p.Op('}').Mark();
        for (var i = 0; i < tensors.Count; i++)
            p.Str(tensors[i].Name).Tensor(i.ToString(), tensors[i].Data.Length / 4, tensors[i].Shape);
        p.Op('u');
        extras?.Invoke(p);
        p.Op('u').Stop();
        var entries = new List<(string, byte[])> { ("archive/data.pkl", p.ToArray()) };
        for (var i = 0; i < tensors.Count; i++) entries.Add(($"archive/data/{i}", tensors[i].Data));
        entries.Add(("archive/version", "3\n"u8.ToArray()));
        return Zip(entries);
    }

    /// <summary>The process's peak resident memory (VmHWM) since the last <see cref="ResetPeak"/>, in bytes (Linux);
    /// elsewhere the current working set.</summary>
    public static long PeakBytes()
    {
        if (!OperatingSystem.IsLinux()) return Environment.WorkingSet;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return StatusBytes(line);
        return Environment.WorkingSet;
    }

    /// <summary>Bytes of a <c>/proc/self/status</c> size line such as <c>"VmHWM:\t  320644 kB"</c>; the number is
    /// printed <c>%8lu</c>, so from 10^7 kB on no space follows the tab.</summary>
    public static long StatusBytes(string line) => long.Parse(line[(line.IndexOf(':') + 1)..].Trim().Split(' ')[0]) * 1024;

    /// <summary>Resets the peak resident memory counter (Linux: "5" to /proc/self/clear_refs).</summary>
    public static void ResetPeak()
    {
        if (!OperatingSystem.IsLinux()) return;
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>Issue 9's per-case memory budget: resident memory may rise at most 1 GiB while a case runs. The
    /// fixtures' models are under 10 MB and are loaded inside the case, so this is stricter than "1 GB above the
    /// model's own size".</summary>
    public const long MemoryBudget = 1L << 30;

    /// <summary>Issue 9's per-case time budget.</summary>
    public static readonly TimeSpan TimeBudget = TimeSpan.FromSeconds(10);

    /// <summary>The exceptions the README's contract allows for bad files and options.</summary>
    public static bool IsContractException(Exception e) => e is CheckpointException or InvalidDataException or FileNotFoundException
        or DirectoryNotFoundException or NotSupportedException or ArgumentException or ObjectDisposedException or OperationCanceledException;

    /// <summary>Runs <paramref name="action"/> and says what is wrong with how it ended, if anything: an exception
    /// outside the contract, more time than <paramref name="timeBudget"/> (default <see cref="TimeBudget"/>), or
    /// resident memory rising more than <paramref name="memoryBudget"/>.</summary>
    public static (string? Problem, Exception? Thrown) Check(string what, Action action, Func<Exception, bool>? allowed = null,
        TimeSpan? timeBudget = null, long memoryBudget = MemoryBudget)
    {
        allowed ??= IsContractException;
        var time = timeBudget ?? TimeBudget;
        var before = Environment.WorkingSet;
        ResetPeak();
        var clock = Stopwatch.StartNew();
        Exception? thrown = null;
        try
        {
            action();
        }
        catch (Exception e)
        {
            thrown = e;
        }
        clock.Stop();
        var rise = PeakBytes() - before;
        if (thrown is not null && !allowed(thrown))
            return ($"{what}: {thrown.GetType().FullName} is outside the exception contract: {thrown.Message}\n{thrown.StackTrace}", thrown);
        if (clock.Elapsed > time) return ($"{what}: took {clock.Elapsed.TotalSeconds:F1} s (budget {time.TotalSeconds} s)", thrown);
        if (rise > memoryBudget) return ($"{what}: resident memory rose {rise >> 20} MiB (budget {memoryBudget >> 20} MiB)", thrown);
        return (null, thrown);
    }

    /// <summary>Runs <paramref name="action"/>, requiring success or a contract exception within the time budget and
    /// with the process's resident memory rising at most <see cref="MemoryBudget"/> above where it started.
    /// Returns the exception thrown, if any.</summary>
    public static Exception? WithinBudget(string what, Action action)
    {
        var (problem, thrown) = Check(what, action);
        Assert.True(problem is null, problem);
        return thrown;
    }

    /// <summary>The command lines of this process's running child processes (Linux: every thread's
    /// <c>/proc/self/task/*/children</c>); empty elsewhere.</summary>
    public static List<string> ChildCommandLines()
    {
        var result = new List<string>();
        if (!OperatingSystem.IsLinux()) return result;
        foreach (var task in Directory.GetDirectories("/proc/self/task"))
        {
            string children;
            try
            {
                children = File.ReadAllText(Path.Combine(task, "children"));
            }
            catch (IOException)
            {
                continue; // the thread ended, or the kernel does not list children
            }
            foreach (var pid in children.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                try
                {
                    result.Add(File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '));
                }
                catch (IOException)
                {
                }
            }
        }
        return result;
    }

    /// <summary>The platform's native error type, named so tests can say it must not escape.</summary>
    public static bool IsNative(Exception e) => e is ExternalException;
}
