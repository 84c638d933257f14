using System.CommandLine;
using TorchSharp;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

/// <summary>Command-line options shared by every mode.</summary>
/// <param name="Mode">The mode (a subcommand): cache, levers, threads, pytorch, soak, tokenizer, kernels, limits,
/// onnxruntime, products or concurrency.</param>
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
/// <param name="AllKernels">kernels mode: also the portable kernel and LibTorch bfloat16; products mode on an AVX-512 CPU: also the AVX2 kernels.</param>
/// <param name="Json">File to write the results to as JSON, or null.</param>
/// <param name="OrtInt8">onnxruntime mode: the int8 formats of ONNX Runtime's quantized copies (onnx/quantize.py).</param>
internal sealed record Options(string Mode, int Threads, int Runs, ScalarType DType, bool Small, int Calls = 2000,
    string? Model = null, string? Lines = null,
    string Shape = "base", int Tokens = 64, bool AllKernels = false, string? Json = null, IReadOnlyList<string>? OrtInt8 = null)
{
    /// <summary>The int8 formats of the onnxruntime mode's ONNX Runtime copies (see onnx/quantize.py).</summary>
    public static readonly string[] OrtInt8Formats = { "s8", "s7", "u8", "s8-tensor", "s7-tensor", "u8-tensor", "s8-ops", "s7-ops", "u8-ops" };
}

internal static class Program
{
    private static readonly (string Name, string Description)[] ModeDescriptions =
    {
        ("cache", "cached greedy (Generator.Generate) vs the naive full-prefix loop, 64 new tokens, batch 1"),
        ("levers", "serial/parallel block x kv_heads 8/2/1 x batch 1/16: prefill, decode per step, KV bytes"),
        ("threads", "cached greedy, 64 new tokens, batch 1, with 1 and 2 LibTorch threads"),
        ("pytorch", "ours (cached, naive) vs Python torch (naive, KV-cached) on the same weights, 64 new tokens, batch 1; " +
                    "needs: apt-get install python3-torch libopenblas0-pthread (float32 only)"),
        ("soak", "memory (RSS, live tensors) over thousands of greedy/sampling/beam calls (small model)"),
        ("tokenizer", "SentencePiece tokens/s: ours vs python sentencepiece (per-line and batch calls) on the same lines, " +
                      "alternated; needs: apt-get install python3-sentencepiece"),
        ("kernels", "weight-product kernels: LibTorch vs ours float32 vs ours int8, batch 1 and 16, 32-token sources, " +
                    "exactly --tokens new tokens, alternated runs (ms/step, tokens/s)"),
        ("limits", "measured read bandwidth and float32 matmul peak, and our decode step as % of each"),
        ("onnxruntime", "ours float32/int8/bf16 weights vs ONNX Runtime float32/int8 vs PyTorch eager (KV cache) on the " +
                        "same weights, batch 1 and 16, 32-token sources, exactly --tokens new tokens, alternated runs; " +
                        "checks ONNX Runtime's float32 tokens equal ours; needs: apt-get install python3-torch " +
                        "python3-onnx libopenblas0-pthread"),
        ("products", "one weight product at a time (attention, FFN, projection) for 1, 16 and 512 rows: LibTorch vs ours " +
                     "float32 / int8 / bf16, alternated (µs/call, GB/s, GFLOP/s)"),
        ("concurrency", "16 callers × 8 sentences through one shared decode loop (in step and staggered) vs the same calls " +
                        "one at a time: tokens/s and ratios, where the loop's time went, the ceiling from step times, a " +
                        "lone caller vs Generator directly (--tokens per sentence)"),
    };

    private static int Main(string[] args)
    {
        Option<int> Positive(string name, int value, string description)
        {
            var option = new Option<int>(name) { Description = description, DefaultValueFactory = _ => value, Recursive = true };
            option.Validators.Add(r =>
            {
                if (r.GetValueOrDefault<int>() <= 0) r.AddError($"{name} must be a positive integer.");
            });
            return option;
        }
        var threads = Positive("--threads", 1, "LibTorch intra-op threads");
        var runs = Positive("--runs", 3, "timed runs after the warm-up; the median is reported");
        var calls = Positive("--calls", 2000, "soak: calls to make");
        var tokens = Positive("--tokens", 64, "kernels/onnxruntime/concurrency: new tokens per sequence");
        var dtype = new Option<string>("--dtype")
        {
            Description = "weights and activations (float16 is pathologically slow on CPU)", DefaultValueFactory = _ => "float32", Recursive = true,
        }.AcceptOnlyFromAmong("float32", "bfloat16");
        var small = new Option<bool>("--small") { Description = "d_model 256, 3+3 layers (quick run)", Recursive = true };
        var model = new Option<string?>("--model")
        {
            Description = "tokenizer: a SentencePiece .model file (default: the spm-oracle fixture's bpe16k and unigram16k)", Recursive = true,
        };
        var lines = new Option<string?>("--lines")
        {
            Description = "tokenizer: text, one input per line, or an oracle expected.jsonl.gz (default: the spm-oracle fixture's lines)",
            Recursive = true,
        };
        var shape = new Option<string>("--shape")
        {
            Description = "kernels/limits/onnxruntime/products: the model shape", DefaultValueFactory = _ => "base", Recursive = true,
        }.AcceptOnlyFromAmong(RandomModel.ShapeNames);
        var allKernels = new Option<bool>("--all-kernels") { Description = "kernels: also our portable kernel and LibTorch bfloat16; products (AVX-512 CPU): also our AVX2 kernels", Recursive = true };
        var json = new Option<string?>("--json") { Description = "also write the results as JSON to this file", Recursive = true };
        var ortInt8 = new Option<string>("--ort-int8")
        {
            Description = "onnxruntime: ONNX Runtime int8 copies, one row each, comma-separated: s8, s7 (default), u8, each " +
                          "optionally -tensor or -ops (see onnx/quantize.py)",
            DefaultValueFactory = _ => "s7",
            Recursive = true,
        };
        ortInt8.Validators.Add(r =>
        {
            foreach (var format in r.GetValueOrDefault<string>().Split(','))
            {
                if (!Options.OrtInt8Formats.Contains(format))
                    r.AddError($"--ort-int8: unknown format '{format}' ({string.Join(", ", Options.OrtInt8Formats)}).");
            }
        });

        var root = new RootCommand("Speed and memory benchmarks of TransformerInference (1 LibTorch thread by default; the " +
                                   "figures are medians of alternated runs, and the first line printed is the command).");
        foreach (var option in new Option[] { threads, runs, dtype, small, calls, model, lines, shape, tokens, allKernels, json, ortInt8 })
            root.Options.Add(option);
        foreach (var (name, description) in ModeDescriptions)
        {
            var command = new Command(name, description);
            command.SetAction(parse => Run(args, new Options(name, parse.GetValue(threads), parse.GetValue(runs),
                parse.GetValue(dtype) == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32, parse.GetValue(small),
                parse.GetValue(calls), parse.GetValue(model), parse.GetValue(lines), parse.GetValue(shape)!, parse.GetValue(tokens),
                parse.GetValue(allKernels), parse.GetValue(json), parse.GetValue(ortInt8)!.Split(','))));
            root.Subcommands.Add(command);
        }
        return root.Parse(args).Invoke();
    }

    private static int Run(string[] args, Options options)
    {
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
