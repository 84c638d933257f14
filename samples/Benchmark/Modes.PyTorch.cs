using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    /// <summary>Debian's interpreter: python3-torch installs there, while a <c>python3</c> on PATH may be a pyenv
    /// shim without torch.</summary>
    private const string Python = "/usr/bin/python3";

    private const string InstallHint =
        "The pytorch mode needs Python's torch at /usr/bin/python3. On Debian 12 install it with\n" +
        "  sudo apt-get install -y python3-torch libopenblas0-pthread\n" +
        "(without libopenblas0-pthread torch falls back to the reference BLAS, about 30x slower: the timings would be meaningless).";

    /// <summary>Whether <see cref="Python"/> can import <paramref name="modules"/> (comma-separated); when it cannot,
    /// says why on stderr followed by <paramref name="installHint"/>.</summary>
    private static bool PythonCanImport(string modules, string installHint, int threads)
    {
        var probe = RunProcess(new[] { "-c", $"import {modules}" }, threads);
        if (probe is { ExitCode: 0 }) return true;
        Console.Error.WriteLine(probe is null ? $"{Python} not found." : $"{Python} cannot import {modules}:\n{probe.Value.Stderr.Trim()}");
        Console.Error.WriteLine(installHint);
        return false;
    }

    /// <summary>Ours (cached greedy and the naive loop) against PyTorch running the same random weights: the seed's
    /// naive loop and a plain-PyTorch KV-cached loop, each making exactly 64 tokens at batch 1 from the same 20-token
    /// source. PyTorch runs in a subprocess (<c>pytorch_baseline.py</c>) with the same thread count, after ours, so
    /// the two never compete for the CPU.</summary>
    /// <returns>0, or non-zero when the baseline cannot run.</returns>
    public static int PyTorch(Options o)
    {
        if (o.DType != ScalarType.Float32)
        {
            Console.Error.WriteLine("The pytorch mode compares float32 only (the baseline loads the weights as saved).");
            return 2;
        }
        // Check the baseline before spending a minute on our side.
        if (!PythonCanImport("torch", InstallHint, o.Threads)) return 3;
        var script = Path.Combine(AppContext.BaseDirectory, "pytorch_baseline.py");
        if (!File.Exists(script))
        {
            Console.Error.WriteLine($"Baseline script not found next to the benchmark: {script}");
            return 3;
        }

        var config = RandomModel.Config(o.Small);
        var source = RandomModel.Source(config, 20);
        var weightsPath = Path.Combine(Path.GetTempPath(), $"transformer-benchmark-{Environment.ProcessId}.pt");
        try
        {
            // Save before loading: the model takes ownership of these very tensors, so PyTorch gets exactly ours.
            var weights = RandomModel.Weights(config);
            try
            {
                PyTorchPickler.PickleStateDict(weightsPath, weights);
            }
            catch
            {
                foreach (var t in weights.Values) t.Dispose();
                throw;
            }

            double cachedMs, naiveMs;
            IReadOnlyList<int> cachedIds = Array.Empty<int>(), naiveIds = Array.Empty<int>();
            using (var model = RandomModel.FromWeights(config, weights, o.DType))
            {
                cachedMs = Timing.Median(o.Runs, () => cachedIds = Cached(model, source));
                naiveMs = Timing.Median(o.Runs, () => naiveIds = Naive(model, source));
            }

            var run = RunProcess(new[]
            {
                script, weightsPath,
                "--source", string.Join(',', source.Select(id => id.ToString(CultureInfo.InvariantCulture))),
                "--heads", config.Heads.ToString(CultureInfo.InvariantCulture),
                "--new-tokens", NewTokens.ToString(CultureInfo.InvariantCulture),
                "--runs", o.Runs.ToString(CultureInfo.InvariantCulture),
                "--threads", o.Threads.ToString(CultureInfo.InvariantCulture),
                "--sos", config.SosId.ToString(CultureInfo.InvariantCulture),
                "--pad", config.PadId.ToString(CultureInfo.InvariantCulture),
            }, o.Threads);
            if (run is not { ExitCode: 0 })
            {
                Console.Error.WriteLine($"The PyTorch baseline failed:\n{run?.Stderr.Trim()}");
                return 1;
            }
            var py = JsonSerializer.Deserialize<BaselineResult>(run.Value.Stdout, BaselineResult.Json)
                ?? throw new InvalidOperationException("The PyTorch baseline printed no result.");

            Console.WriteLine($"PyTorch {py.Torch}, {py.Threads} thread(s), BLAS mapped: " +
                (py.Blas.Length > 0 ? string.Join(", ", py.Blas) : "(none found)"));
            Console.WriteLine();
            string[] Row(string label, double ms) => new[]
            {
                label, Table.Ms(ms), Table.Ms(ms / NewTokens), Table.Ratio(ms / py.CachedMs), Table.Ratio(ms / py.NaiveMs),
            };
            Table.Print(new[] { "decoding (batch 1, 64 new tokens)", "ms", "ms/token", "× PyTorch cached", "× PyTorch naive" }, new[]
            {
                Row("ours, cached greedy (`Generator.Generate`, `IgnoreEos`)", cachedMs),
                Row("ours, naive loop (`Decode` over the whole prefix each step)", naiveMs),
                Row($"PyTorch {py.Torch}, naive loop (the seed's: whole prefix, causal mask)", py.NaiveMs),
                Row($"PyTorch {py.Torch}, KV-cached loop (plain PyTorch)", py.CachedMs),
            });
            Console.WriteLine();
            Console.WriteLine("× = the row's time / PyTorch's time (below 1: faster than PyTorch). Every row includes the encoder pass.");

            // Same weights, same float32 arithmetic up to summation order: all four paths should pick the same
            // tokens. A difference means either a near-tie flipped by rounding or the two models are not the same.
            Console.WriteLine();
            foreach (var (name, ids) in new[] { ("ours naive", naiveIds), ("PyTorch naive", py.NaiveIds), ("PyTorch cached", py.CachedIds) })
            {
                var first = FirstDifference(cachedIds, ids);
                Console.WriteLine(first < 0
                    ? $"- {name}: same {ids.Count} tokens as ours cached."
                    : $"- {name}: tokens differ from ours cached from position {first} (ours {Show(cachedIds)}; theirs {Show(ids)}).");
            }
            return 0;
        }
        finally
        {
            File.Delete(weightsPath);
        }
    }

    private static int FirstDifference(IReadOnlyList<int> a, IReadOnlyList<int> b)
    {
        for (var i = 0; i < Math.Min(a.Count, b.Count); i++)
            if (a[i] != b[i]) return i;
        return a.Count == b.Count ? -1 : Math.Min(a.Count, b.Count);
    }

    private static string Show(IReadOnlyList<int> ids) => "[" + string.Join(", ", ids) + "]";

    /// <summary>Runs <see cref="Python"/> with <paramref name="args"/>; null when the interpreter does not exist.</summary>
    private static (int ExitCode, string Stdout, string Stderr)? RunProcess(IEnumerable<string> args, int threads)
    {
        var info = new ProcessStartInfo(Python)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        // torch.set_num_threads sets the intra-op pool; OpenBLAS keeps its own pool, sized from these variables at
        // load time, so they must be set before the interpreter starts for the thread counts to really match.
        var n = threads.ToString(CultureInfo.InvariantCulture);
        info.Environment["OMP_NUM_THREADS"] = n;
        info.Environment["OPENBLAS_NUM_THREADS"] = n;
        Process process;
        try
        {
            process = Process.Start(info) ?? throw new InvalidOperationException($"Could not start {Python}.");
        }
        catch (Win32Exception)
        {
            return null;
        }
        using (process)
        {
            // Read stderr concurrently: a child that fills one pipe while we block on the other would hang.
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, stdout, stderr.GetAwaiter().GetResult());
        }
    }

    /// <summary>The JSON object <c>pytorch_baseline.py</c> prints.</summary>
    private sealed record BaselineResult(string Torch, int Threads, string[] Blas, double NaiveMs, double CachedMs,
        int[] NaiveIds, int[] CachedIds)
    {
        public static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };
    }
}
