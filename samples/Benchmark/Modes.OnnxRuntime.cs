using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using TorchSharp.PyBridge;
using TransformerInference.Decoding;
using TransformerInference.Modeling;
using static TorchSharp.torch;
using Generator = TransformerInference.Decoding.Generator;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    private const string OnnxInstallHint =
        "The onnxruntime mode exports the graphs and runs the PyTorch baseline with Debian's Python packages:\n" +
        "  sudo apt-get install -y python3-torch python3-onnx libopenblas0-pthread";

    /// <summary>Ours (float32, int8 and bf16 weights) against ONNX Runtime (float32 and an int8 copy with dynamically
    /// quantized MatMul weights) and PyTorch eager with a KV cache, all on the same random weights: greedy decoding of
    /// exactly <see cref="Options.Tokens"/> new tokens for batches of 1 and 16 32-token sources, encoder included, one
    /// thread everywhere, runs alternated between the six engines, medians.</summary>
    /// <returns>0; 1 when ONNX Runtime's float32 tokens differ from ours (the comparison would not be like for like);
    /// 3 when Python, torch or onnx is missing.</returns>
    public static int OnnxRuntime(Options o)
    {
        if (o.DType != ScalarType.Float32)
        {
            Console.Error.WriteLine("The onnxruntime mode compares float32 weights (and int8/bf16 weights with float32 activations); drop --dtype.");
            return 2;
        }
        if (!PythonCanImport("torch, onnx", OnnxInstallHint, o.Threads)) return 3;
        var scripts = Path.Combine(AppContext.BaseDirectory, "onnx");
        var config = RandomModel.Shape(o.Shape);
        const int sourceLength = 32;
        var newTokens = o.Tokens;
        var batches = new[] { 1, 16 };
        var sources = Enumerable.Range(0, batches.Max()).Select(i => RandomModel.Source(config, sourceLength, seed: 7 + i)).ToArray();
        var formats = o.OrtInt8 ?? new[] { "s7" };
        var folder = Directory.CreateTempSubdirectory("transformer-benchmark-onnx-").FullName;
        try
        {
            // The weights every engine runs: saved for Python (export + PyTorch baseline); our engines rebuild the
            // same tensors from the same seed.
            var weightsPath = Path.Combine(folder, "weights.pt");
            var weights = RandomModel.Weights(config);
            try
            {
                PyTorchPickler.PickleStateDict(weightsPath, weights);
            }
            finally
            {
                foreach (var t in weights.Values) t.Dispose();
            }
            var sourcesPath = Path.Combine(folder, "sources.json");
            File.WriteAllText(sourcesPath, JsonSerializer.Serialize(new { sos = config.SosId, sources }));

            var watch = Stopwatch.StartNew();
            var export = RunProcess(new[]
            {
                Path.Combine(scripts, "export.py"), weightsPath, folder,
                "--heads", config.Heads.ToString(CultureInfo.InvariantCulture),
            }.Concat(formats.SelectMany(f => new[] { "--int8", f })), o.Threads);
            if (export is not { ExitCode: 0 })
            {
                Console.Error.WriteLine($"The ONNX export failed:\n{export?.Stderr.Trim()}");
                return 1;
            }
            var exported = JsonDocument.Parse(export.Value.Stdout).RootElement;
            Console.WriteLine($"Exported with torch {exported.GetProperty("torch").GetString()}, onnx {exported.GetProperty("onnx").GetString()}, " +
                $"opset {exported.GetProperty("opset").GetInt32()} in {watch.Elapsed.TotalSeconds:F0} s: encoder_model, decoder_model, " +
                $"decoder_with_past_model (float32) and their int8 copies ({IntOrtMatMuls(exported)}); " +
                $"ONNX Runtime {OrtEnv.Instance().GetVersionString()}, 1 intra-op and 1 inter-op thread, ORT_ENABLE_ALL.");
            Console.WriteLine();

            using var pytorch = PyTorchServer.Start(Path.Combine(scripts, "pytorch_kv.py"), weightsPath, sourcesPath, config, newTokens, o.Threads);
            Console.WriteLine($"PyTorch {pytorch.Torch}, BLAS mapped: {(pytorch.Blas.Length > 0 ? string.Join(", ", pytorch.Blas) : "(none found)")}");
            if (!pytorch.Blas.Any(b => b.Contains("openblas", StringComparison.OrdinalIgnoreCase)))
                Console.WriteLine("WARNING: PyTorch is not using OpenBLAS (apt-get install libopenblas0-pthread); its times are not meaningful.");
            Console.WriteLine();
            var ourEngines = Engines(o).Where(e => e.Kernel != "libtorch").ToList();
            var models = new Dictionary<string, TransformerModel>();
            var ort = new Dictionary<string, OrtSeq2Seq>();
            try
            {
                foreach (var e in ourEngines) models[e.Name] = Load(config, e);
                ort["ONNX Runtime float32"] = new OrtSeq2Seq(folder);
                foreach (var format in formats) ort[$"ONNX Runtime int8 ({format})"] = new OrtSeq2Seq(Path.Combine(folder, "int8-" + format));
                var engines = new List<(string Name, Func<int, (double Ms, int[][] Ids)> Run)>();
                foreach (var (name, model) in models) engines.Add((name, batch => RunOurs(model, sources, batch, newTokens)));
                foreach (var (name, session) in ort) engines.Add((name, batch => Timed(() => session.Greedy(sources, batch, newTokens, config.SosId))));
                engines.Add(($"PyTorch {pytorch.Torch} eager, KV cache", pytorch.Run));

                var times = new Dictionary<(string, int), List<double>>();
                var ids = new Dictionary<(string, int), int[][]>();
                foreach (var batch in batches)
                {
                    foreach (var e in engines) Timing.WarmUp(() => ids[(e.Name, batch)] = e.Run(batch).Ids);
                    for (var run = 0; run < o.Runs; run++)
                    {
                        foreach (var e in run % 2 == 0 ? engines : Enumerable.Reverse(engines))
                        {
                            GC.Collect();
                            GC.WaitForPendingFinalizers();
                            var (ms, got) = e.Run(batch);
                            (times.TryGetValue((e.Name, batch), out var list) ? list : times[(e.Name, batch)] = new()).Add(ms);
                            ids[(e.Name, batch)] = got;
                        }
                    }
                }
                return OnnxTable(o, engines.Select(e => e.Name).ToList(), batches, times, ids, newTokens, sourceLength);
            }
            finally
            {
                foreach (var m in models.Values) m.Dispose();
                foreach (var s in ort.Values) s.Dispose();
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static string IntOrtMatMuls(JsonElement exported) => string.Join(", ", exported.GetProperty("int8").EnumerateObject()
        .Select(f => $"{f.Name}: {f.Value.EnumerateObject().Sum(g => g.Value.GetProperty("matmuls").GetInt32())} MatMul weights quantized"));

    private static (double Ms, int[][] Ids) Timed(Func<int[][]> run)
    {
        var watch = Stopwatch.StartNew();
        var ids = run();
        return (watch.Elapsed.TotalMilliseconds, ids);
    }

    private static (double Ms, int[][] Ids) RunOurs(TransformerModel model, int[][] sources, int batch, int newTokens)
    {
        using var scope = NewDisposeScope();
        var options = new DecodingOptions { MaxNewTokens = newTokens, IgnoreEos = true };
        var input = sources.Take(batch).Select(s => (IReadOnlyList<int>)s).ToList();
        var watch = Stopwatch.StartNew();
        var result = Generator.Generate(model, input, options);
        var ms = watch.Elapsed.TotalMilliseconds;
        return (ms, result.Select(r => r[0].Ids.ToArray()).ToArray());
    }

    private static int OnnxTable(Options o, List<string> names, int[] batches, Dictionary<(string, int), List<double>> times,
        Dictionary<(string, int), int[][]> ids, int newTokens, int sourceLength)
    {
        var ours = names[0];
        var rows = new List<string[]>();
        var mismatch = false;
        foreach (var name in names)
        {
            var row = new List<string> { name };
            var ms = batches.Select(b => Timing.Median(times[(name, b)])).ToArray();
            row.AddRange(ms.Select(m => Table.Ms(m / newTokens)));
            row.AddRange(batches.Select((b, i) => (b * newTokens / (ms[i] / 1000)).ToString("F0", CultureInfo.InvariantCulture)));
            row.Add(string.Join(" / ", batches.Select((b, i) => Table.Ratio(ms[i] / Timing.Median(times[(ours, b)])))));
            var firsts = batches.SelectMany(b => ids[(name, b)].Zip(ids[(ours, b)]).Select(p => FirstDifference(p.First, p.Second)))
                .Where(i => i >= 0).Select(i => (double)i).ToList();
            var total = batches.Sum(b => b);
            row.Add(firsts.Count == 0 ? "same" : $"{firsts.Count} of {total} differ (median from token {Timing.Median(firsts):F0})");
            if (name == "ONNX Runtime float32" && firsts.Count > 0) mismatch = true;
            rows.Add(row.ToArray());
            for (var i = 0; i < batches.Length; i++) Report.Figures[$"{name} | batch {batches[i]} | ms"] = ms[i];
        }
        Table.Print(new[]
        {
            "engine", "batch 1 ms/step", "batch 16 ms/step", "batch 1 tokens/s", "batch 16 tokens/s", "time × ours float32 (1 / 16)",
            $"tokens vs {ours}",
        }, rows);
        Console.WriteLine();
        Console.WriteLine($"{o.Shape} shape, random weights, {sourceLength}-token sources, exactly {newTokens} new tokens (greedy, EOS " +
            "ignored), encoder included; a step makes one token for every sequence of the batch; runs alternated between " +
            "engines; medians. Tokens are compared over both batches (17 sequences).");
        // The issue's targets: our time over ONNX Runtime's, float32 against float32 and int8 against the first int8 copy.
        var ortInt8 = names.First(n => n.StartsWith("ONNX Runtime int8", StringComparison.Ordinal));
        foreach (var (mine, theirs, key) in new[] { (ours, "ONNX Runtime float32", "float32"), (names.First(n => n.StartsWith("ours int8", StringComparison.Ordinal)), ortInt8, "int8") })
        {
            var ratios = batches.Select(b => Timing.Median(times[(mine, b)]) / Timing.Median(times[(theirs, b)])).ToArray();
            for (var i = 0; i < batches.Length; i++) Report.Figures[$"ours {key} / ONNX Runtime {key} | batch {batches[i]}"] = ratios[i];
            Console.WriteLine($"{mine} ÷ {theirs}: " + string.Join(", ", batches.Select((b, i) => $"batch {b} {Table.Ratio(ratios[i])}")) +
                " (target ≤ 1.00)");
        }
        if (!mismatch) return 0;
        foreach (var b in batches)
        {
            for (var r = 0; r < b; r++)
            {
                var a = ids[(ours, b)][r];
                var x = ids[("ONNX Runtime float32", b)][r];
                if (!a.SequenceEqual(x))
                    Console.Error.WriteLine($"batch {b} row {r}: ours {Show(a)}; ONNX Runtime {Show(x)} (first difference at {FirstDifference(a, x)})");
            }
        }
        Console.Error.WriteLine("ONNX Runtime float32 did not produce our float32 tokens: the engines do not run the same model.");
        return 1;
    }

    /// <summary>Greedy decoding on the three graphs Optimum exports for a Marian model: the encoder once, the
    /// decoder without past for the first token (it also returns every layer's cross-attention K/V), then the
    /// decoder with past for the rest, each step's present K/V fed back as the next step's past. Inputs wrap managed
    /// arrays without a copy (the token array is rewritten in place between steps); outputs are ORT-allocated
    /// <see cref="OrtValue"/>s passed straight back as inputs, so no tensor is copied between steps.</summary>
    private sealed class OrtSeq2Seq : IDisposable
    {
        private readonly InferenceSession _encoder, _decoder, _withPast;
        private readonly RunOptions _run = new();
        private readonly int _layers;
        private readonly string[] _withPastInputs, _withPastOutputs, _decoderOutputs;

        public OrtSeq2Seq(string folder)
        {
            using var options = new SessionOptions
            {
                IntraOpNumThreads = 1,
                InterOpNumThreads = 1,
                ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
                GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
                LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            };
            _encoder = new InferenceSession(Path.Combine(folder, "encoder_model.onnx"), options);
            _decoder = new InferenceSession(Path.Combine(folder, "decoder_model.onnx"), options);
            _withPast = new InferenceSession(Path.Combine(folder, "decoder_with_past_model.onnx"), options);
            _layers = _withPast.InputNames.Count(n => n.EndsWith(".decoder.key", StringComparison.Ordinal));
            _decoderOutputs = _decoder.OutputNames.ToArray();
            _withPastOutputs = _withPast.OutputNames.ToArray();
            _withPastInputs = new[] { "input_ids", "encoder_attention_mask" }
                .Concat(Enumerable.Range(0, _layers).SelectMany(i => new[] { "decoder.key", "decoder.value", "encoder.key", "encoder.value" }
                    .Select(s => $"past_key_values.{i}.{s}"))).ToArray();
        }

        public int[][] Greedy(int[][] sources, int batch, int newTokens, int sos)
        {
            var length = sources[0].Length;
            var flat = sources.Take(batch).SelectMany(s => s).Select(id => (long)id).ToArray();
            var ones = Enumerable.Repeat(1L, flat.Length).ToArray();
            var next = Enumerable.Repeat((long)sos, batch).ToArray();
            var result = Enumerable.Range(0, batch).Select(_ => new int[newTokens]).ToArray();
            using var ids = OrtValue.CreateTensorValueFromMemory(flat, new long[] { batch, length });
            using var mask = OrtValue.CreateTensorValueFromMemory(ones, new long[] { batch, length });
            using var token = OrtValue.CreateTensorValueFromMemory(next, new long[] { batch, 1 });
            using var encoded = _encoder.Run(_run, new[] { "input_ids", "attention_mask" }, new[] { ids, mask }, new[] { "last_hidden_state" });
            using var first = _decoder.Run(_run, new[] { "input_ids", "encoder_attention_mask", "encoder_hidden_states" },
                new[] { token, mask, encoded.First() }, _decoderOutputs);
            var firstValues = first.ToArray(); // logits, then per layer: decoder key, value, encoder key, value
            Argmax(firstValues[0], next, result, 0);
            var inputs = new OrtValue[_withPastInputs.Length];
            inputs[0] = token;
            inputs[1] = mask;
            for (var i = 0; i < _layers; i++)
            {
                for (var j = 0; j < 4; j++) inputs[2 + 4 * i + j] = firstValues[1 + 4 * i + j];
            }
            IDisposableReadOnlyCollection<OrtValue>? previous = null;
            try
            {
                for (var step = 1; step < newTokens; step++)
                {
                    var outputs = _withPast.Run(_run, _withPastInputs, inputs, _withPastOutputs);
                    previous?.Dispose(); // the past the step just read; the new present replaces it
                    previous = outputs;
                    var values = outputs.ToArray(); // logits, then per layer: decoder key, value
                    for (var i = 0; i < _layers; i++)
                    {
                        inputs[2 + 4 * i] = values[1 + 2 * i];
                        inputs[3 + 4 * i] = values[2 + 2 * i];
                    }
                    Argmax(values[0], next, result, step);
                }
            }
            finally
            {
                previous?.Dispose();
            }
            return result;
        }

        /// <summary>Each row's argmax of the last position's logits [B, T, V] into <paramref name="next"/> (the next
        /// step's input) and the result.</summary>
        private static void Argmax(OrtValue logits, long[] next, int[][] result, int step)
        {
            var shape = logits.GetTensorTypeAndShape().Shape;
            long t = shape[1], v = shape[2];
            var data = logits.GetTensorDataAsSpan<float>();
            for (var b = 0; b < next.Length; b++)
            {
                var row = data.Slice((int)(((b * t) + t - 1) * v), (int)v);
                var best = 0;
                for (var k = 1; k < row.Length; k++)
                {
                    if (row[k] > row[best]) best = k;
                }
                next[b] = best;
                result[b][step] = best;
            }
        }

        public void Dispose()
        {
            _encoder.Dispose();
            _decoder.Dispose();
            _withPast.Dispose();
            _run.Dispose();
        }
    }

    /// <summary>pytorch_kv.py as a long-lived child process: one greedy run per request, timed inside Python (no
    /// pipe or start-up cost in the figure), so its runs alternate with the other engines'.</summary>
    private sealed class PyTorchServer : IDisposable
    {
        private readonly Process _process;
        private readonly System.Text.StringBuilder _stderr = new();

        public string Torch { get; }

        private PyTorchServer(Process process)
        {
            _process = process;
            _process.ErrorDataReceived += (_, e) =>
            {
                lock (_stderr) _stderr.AppendLine(e.Data);
            };
            _process.BeginErrorReadLine();
            var ready = JsonDocument.Parse(ReadLine()).RootElement;
            Torch = ready.GetProperty("torch").GetString() ?? "?";
            Blas = ready.GetProperty("blas").EnumerateArray().Select(b => b.GetString() ?? "").ToArray();
        }

        /// <summary>The BLAS libraries mapped into the Python process (OpenBLAS, or the ~30× slower reference BLAS).</summary>
        public string[] Blas { get; }

        public static PyTorchServer Start(string script, string weights, string sources, TransformerConfig config, int newTokens, int threads)
        {
            var info = new ProcessStartInfo(Python)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in new[]
            {
                script, weights, sources, "--heads", config.Heads.ToString(CultureInfo.InvariantCulture),
                "--new-tokens", newTokens.ToString(CultureInfo.InvariantCulture), "--threads", threads.ToString(CultureInfo.InvariantCulture),
                "--pad", config.PadId.ToString(CultureInfo.InvariantCulture),
            }) info.ArgumentList.Add(a);
            var n = threads.ToString(CultureInfo.InvariantCulture);
            info.Environment["OMP_NUM_THREADS"] = n;
            info.Environment["OPENBLAS_NUM_THREADS"] = n;
            return new PyTorchServer(Process.Start(info) ?? throw new InvalidOperationException($"Could not start {Python}."));
        }

        public (double Ms, int[][] Ids) Run(int batch)
        {
            _process.StandardInput.WriteLine(batch.ToString(CultureInfo.InvariantCulture));
            _process.StandardInput.Flush();
            var reply = JsonDocument.Parse(ReadLine()).RootElement;
            var ids = reply.GetProperty("ids").EnumerateArray().Select(r => r.EnumerateArray().Select(x => x.GetInt32()).ToArray()).ToArray();
            return (reply.GetProperty("ms").GetDouble(), ids);
        }

        private string ReadLine() => _process.StandardOutput.ReadLine() ?? throw new InvalidOperationException(
            "The PyTorch baseline exited:\n" + Stderr());

        private string Stderr()
        {
            _process.WaitForExit(5000);
            lock (_stderr) return _stderr.ToString().Trim();
        }

        public void Dispose()
        {
            try
            {
                _process.StandardInput.Close(); // EOF ends the loop
                if (!_process.WaitForExit(10_000)) _process.Kill();
            }
            finally
            {
                _process.Dispose();
            }
        }
    }
}
