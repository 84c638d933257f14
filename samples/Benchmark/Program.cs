using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

/// <summary>Command-line options shared by every mode.</summary>
/// <param name="Mode">cache, levers, threads or pytorch.</param>
/// <param name="Threads">LibTorch intra-op threads (default 1: the development VM behaves like one core, where more
/// threads were often slower).</param>
/// <param name="Runs">Timed runs after the warm-up; the median is reported.</param>
/// <param name="DType">Weights and activations.</param>
/// <param name="Small">d_model 256 and 3+3 layers instead of the base size, for a quick check.</param>
/// <param name="Calls">Calls made by the soak mode.</param>
/// <param name="Model">tokenizer: a SentencePiece model file (default: the oracle's BPE and unigram models).</param>
/// <param name="Lines">tokenizer: a text file, one input per line, or an oracle expected.jsonl.gz.</param>
/// <param name="Shape">kernels mode: base, small, opus-mt or nllb-600m.</param>
/// <param name="Tokens">kernels mode: new tokens per sequence.</param>
/// <param name="AllKernels">kernels mode: also the portable kernel and LibTorch bfloat16.</param>
/// <param name="Json">File to write the results to as JSON, or null.</param>
/// <param name="OrtInt8">onnxruntime mode: the int8 formats of ONNX Runtime's quantized copies (onnx/quantize.py).</param>
internal sealed record Options(string Mode, int Threads, int Runs, ScalarType DType, bool Small, int Calls = 2000,
    string? Model = null, string? Lines = null,
    string Shape = "base", int Tokens = 64, bool AllKernels = false, string? Json = null, IReadOnlyList<string>? OrtInt8 = null)
{
    public const string Usage = """
        usage: dotnet run -c Release --project samples/Benchmark -- <mode> [options]
          modes:   cache    cached greedy (Generator.Generate) vs the naive full-prefix loop, 64 new tokens, batch 1
                   levers   serial/parallel block x kv_heads 8/2/1 x batch 1/16: prefill, decode per step, KV bytes
                   threads  cached greedy, 64 new tokens, batch 1, with 1 and 2 LibTorch threads
                   pytorch  ours (cached, naive) vs Python torch (naive, KV-cached) on the same weights, 64 new tokens,
                            batch 1; needs: apt-get install python3-torch libopenblas0-pthread (float32 only)
                   soak     memory (RSS, live tensors) over thousands of greedy/sampling/beam calls (small model)
                   tokenizer  SentencePiece tokens/s: ours vs python sentencepiece (per-line and batch calls) on the
                            same lines, alternated; needs: apt-get install python3-sentencepiece
                   kernels  weight-product kernels: LibTorch vs ours float32 vs ours int8, batch 1 and 16, 32-token
                            sources, exactly --tokens new tokens, alternated runs (ms/step, tokens/s)
                   limits   measured read bandwidth and float32 matmul peak, and our decode step as % of each
                   onnxruntime  ours float32/int8/bf16 weights vs ONNX Runtime float32/int8 vs PyTorch eager (KV cache)
                            on the same weights, batch 1 and 16, 32-token sources, exactly --tokens new tokens,
                            alternated runs; checks ONNX Runtime's float32 tokens equal ours;
                            needs: apt-get install python3-torch python3-onnx libopenblas0-pthread
                   products one weight product at a time (attention, FFN, projection) for 1, 16 and 512 rows:
                            LibTorch vs ours float32 / int8 / bf16, alternated (µs/call, GB/s, GFLOP/s)
                   concurrency  16 callers × 8 sentences through one shared decode loop (in step and staggered) vs
                            the same calls one at a time: tokens/s and ratios, where the loop's time went, the
                            ceiling from step times, a lone caller vs Generator directly (--tokens per sentence)
          options: --threads N            LibTorch threads (default 1)
                   --runs N               timed runs after one warm-up, median reported (default 3)
                   --dtype float32|bfloat16  (default float32)
                   --small                d_model 256, 3+3 layers (quick run)
                   --calls N              soak: calls to make (default 2000)
                   --model FILE           tokenizer: a .model file (default: the spm-oracle fixture's bpe16k and unigram16k)
                   --lines FILE           tokenizer: text, one input per line (default: the spm-oracle fixture's 6,011 lines)
                   --shape NAME           kernels/limits/onnxruntime: base (default), small, opus-mt, nllb-600m
                   --tokens N             kernels/onnxruntime: new tokens per sequence (default 64)
                   --all-kernels          kernels: also our portable kernel and LibTorch bfloat16
                   --ort-int8 F[,F...]    onnxruntime: ONNX Runtime int8 copies, one row each: s8, s7 (default), u8,
                                          each optionally -tensor or -ops (see onnx/quantize.py)
                   --json FILE            also write the results as JSON
        """;

    private static bool IsOrtInt8Format(string f) =>
        f is "s8" or "s7" or "u8" or "s8-tensor" or "s7-tensor" or "u8-tensor" or "s8-ops" or "s7-ops" or "u8-ops";

    /// <summary>Parses the arguments; throws <see cref="ArgumentException"/> with the offending one.</summary>
    public static Options Parse(string[] args)
    {
        if (args.Length == 0) throw new ArgumentException("No mode given.");
        var mode = args[0];
        if (mode is not ("cache" or "levers" or "threads" or "pytorch" or "soak" or "tokenizer" or "kernels" or "limits" or "concurrency" or "onnxruntime" or "products")) throw new ArgumentException($"Unknown mode '{mode}'.");
        int threads = 1, runs = 3, calls = 2000, tokens = 64;
        string? model = null, lines = null;
        var dtype = ScalarType.Float32;
        var small = false;
        var allKernels = false;
        string shape = "base";
        string? json = null;
        var ortInt8 = new List<string>();
        for (var i = 1; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int Positive(string text) => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
                ? n : throw new ArgumentException($"Expected a positive integer, got '{text}'.");
            switch (args[i])
            {
                case "--threads": threads = Positive(Value()); break;
                case "--runs": runs = Positive(Value()); break;
                case "--small": small = true; break;
                case "--calls": calls = Positive(Value()); break;
                case "--model": model = Value(); break;
                case "--lines": lines = Value(); break;
                case "--tokens": tokens = Positive(Value()); break;
                case "--all-kernels": allKernels = true; break;
                case "--json": json = Value(); break;
                case "--ort-int8":
                    foreach (var format in Value().Split(','))
                    {
                        ortInt8.Add(IsOrtInt8Format(format) ? format
                            : throw new ArgumentException($"Unknown int8 format '{format}' (s8, s7, u8, optionally -tensor or -ops: s8-tensor, u8-ops, ...)."));
                    }
                    break;
                case "--shape":
                    shape = Value();
                    RandomModel.Shape(shape); // throws on an unknown name
                    break;
                case "--dtype":
                    dtype = Value() switch
                    {
                        "float32" => ScalarType.Float32,
                        "bfloat16" => ScalarType.BFloat16,
                        var other => throw new ArgumentException($"Unsupported dtype '{other}' (float32 or bfloat16; float16 is pathologically slow on CPU)."),
                    };
                    break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'.");
            }
        }
        return new Options(mode, threads, runs, dtype, small, calls, model, lines, shape, tokens, allKernels, json,
            ortInt8.Count > 0 ? ortInt8 : new[] { "s7" });
    }
}

internal static class Program
{
    private static int Main(string[] args)
    {
        Options options;
        try
        {
            options = Options.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine(e.Message);
            Console.Error.WriteLine(Options.Usage);
            return 2;
        }

        // The header makes a pasted table reproducible: the exact command and the conditions it ran under.
        Console.WriteLine($"`dotnet run -c Release --project samples/Benchmark -- {string.Join(' ', args)}`");
        Console.WriteLine();
        torch.set_num_threads(options.Threads);
        var config = options.Mode is "kernels" or "limits" or "onnxruntime" or "products"
            ? RandomModel.Shape(options.Shape)
            : RandomModel.Config(options.Small || options.Mode == "soak"); // soak always uses the small model
        Console.WriteLine($"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} logical CPUs, " +
            $"LibTorch threads {torch.get_num_threads()}, {options.DType}, d_model {config.DModel}, " +
            $"{config.EncoderLayers}+{config.DecoderLayers} layers, d_ff {config.DFF}, vocab {config.TargetVocabSize}, " +
            $"median of {options.Runs} run(s) after " + (options.Mode == "onnxruntime" || (options.Mode == "kernels" && (long)config.TargetVocabSize * config.DModel < 100_000_000)
                ? "at least 3 warm-up runs and 2 s" : "1 warm-up"));
        Console.WriteLine();

        switch (options.Mode)
        {
            case "cache": Modes.Cache(options); break;
            case "levers": Modes.Levers(options); break;
            case "threads": Modes.Threads(options); break;
            case "pytorch":
                var code = Modes.PyTorch(options);
                if (code == 0 && options.Json is { } file) Report.Write(file, args, options);
                return code;
            case "soak": Modes.Soak(options); break;
            case "tokenizer":
                var status = Modes.Tokenizer(options);
                if (status == 0 && options.Json is { } output) Report.Write(output, args, options);
                return status;
            case "kernels": Modes.Kernels(options); break;
            case "onnxruntime":
                var result = Modes.OnnxRuntime(options);
                // A token mismatch still writes its table: the JSON shows which engine differed.
                if (result is 0 or 1 && options.Json is { } report) Report.Write(report, args, options);
                return result;
            case "limits": Modes.Limits(options); break;
            case "concurrency": Modes.Concurrency(options); break;
            case "products": Modes.Products(options); break;
        }
        if (options.Json is { } path) Report.Write(path, args, options);
        return 0;
    }
}
