// Translates sentences with a TransformerInference model. Run with --help for the options.
using System.Globalization;
using System.Text;
using System.Text.Json;
using TorchSharp;
using TransformerInference;
using TransformerInference.Decoding;
using TransformerInference.Loading;

Console.OutputEncoding = new UTF8Encoding(false);
try
{
    var cli = CommandLine.Parse(args);
    if (cli.Help)
    {
        Console.WriteLine(CommandLine.Usage);
        return 0;
    }
    return cli.InputFormat == "ids" ? RunIds(cli) : await RunText(cli);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"translate: {e.Message} (see --help)");
    return 2;
}
catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or CheckpointException or InvalidDataException
                              or NotSupportedException or ArgumentException or InvalidOperationException)
{
    Console.Error.WriteLine($"translate: {e.Message.ReplaceLineEndings(" ")}");
    return 1;
}

static async Task<int> RunText(CommandLine cli)
{
    var options = new TranslatorOptions
    {
        Device = cli.Device,
        Quantization = cli.Quantization,
        Heads = cli.Heads,
        MaxBatchSize = cli.BatchSize,
        Decoding = cli.DecodingGiven ? cli.Decoding : null, // null: the model family's defaults
        SourceLanguage = cli.SourceLanguage,
        TargetLanguage = cli.TargetLanguage,
    };
    using var translator = cli.SourceTokenizer.Length == 0
        ? Translator.Load(cli.ModelPath, options) // a Hugging Face folder carries its tokenizer
        : Translator.Load(cli.ModelPath, cli.SourceTokenizer, cli.TargetTokenizer, options);
    foreach (var batch in Inputs(cli).Chunk(cli.BatchSize))
    {
        if (cli.Stream)
        {
            foreach (var line in batch)
            {
                try
                {
                    await foreach (var piece in translator.TranslateStreamAsync(line))
                    {
                        Console.Write(piece);
                        Console.Out.Flush();
                    }
                    Console.WriteLine();
                }
                catch (ArgumentException e)
                {
                    WriteError(cli, line, e.Message);
                }
            }
            continue;
        }
        var outcomes = new (Translation? Result, string? Error)[batch.Length];
        try
        {
            var results = translator.TranslateDetailed(batch);
            for (var i = 0; i < batch.Length; i++) outcomes[i] = (results[i], null);
        }
        catch (ArgumentException)
        {
            // Some line is unusable (too long): translate one by one so the others still come out.
            for (var i = 0; i < batch.Length; i++)
            {
                try { outcomes[i] = (translator.TranslateDetailed(new[] { batch[i] })[0], null); }
                catch (ArgumentException e) { outcomes[i] = (null, e.Message); }
            }
        }
        for (var i = 0; i < batch.Length; i++)
        {
            if (outcomes[i].Result is { } r) WriteResult(cli, batch[i], r);
            else WriteError(cli, batch[i], outcomes[i].Error!);
        }
    }
    return 0;
}

static int RunIds(CommandLine cli)
{
    using var model = ModelLoader.Load(cli.ModelPath, new ModelLoadOptions { Device = cli.Device, Heads = cli.Heads, Quantization = cli.Quantization });
    // A Hugging Face folder brings its generation rules (start token, forced and banned tokens, length).
    var decoding = cli.Decoding;
    if (File.Exists(Path.Combine(cli.ModelPath, "generation_config.json")))
    {
        var family = ModelLoader.LoadGenerationDefaults(cli.ModelPath);
        decoding = cli.DecodingGiven ? cli.Decoding.WithRulesFrom(family) : family;
    }
    foreach (var batch in Inputs(cli).Chunk(cli.BatchSize))
    {
        foreach (var line in batch)
        {
            try
            {
                var ids = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
                    .Select(t => int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 0 && v < model.Config.SourceVocabSize
                        ? v : throw new ArgumentException($"'{t}' is not a source token id (0..{model.Config.SourceVocabSize - 1})."))
                    .ToArray();
                var hypotheses = Generator.Generate(model, new[] { ids }, decoding)[0];
                int[] Sequence(Hypothesis h) => new[] { decoding.DecoderStartTokenId ?? model.SosId }.Concat(h.Ids)
                    .Concat(h.Finished ? new[] { model.EosId } : Array.Empty<int>()).ToArray();
                Console.WriteLine(cli.Format == "jsonl"
                    ? JsonSerializer.Serialize(new { input = line, ids = Sequence(hypotheses[0]),
                        n_best = hypotheses.Select(h => new { ids = Sequence(h), score = h.Score }) })
                    : string.Join(' ', Sequence(hypotheses[0])));
            }
            catch (ArgumentException e)
            {
                WriteError(cli, line, e.Message);
            }
        }
    }
    return 0;
}

static IEnumerable<string> Inputs(CommandLine cli)
{
    if (cli.Sentences.Count > 0)
    {
        foreach (var s in cli.Sentences) yield return s;
        yield break;
    }
    if (cli.NoArguments)
    {
        yield return "I love you so much";
        yield break;
    }
    Console.InputEncoding = new UTF8Encoding(false);
    while (Console.ReadLine() is { } line) yield return line;
}

static void WriteResult(CommandLine cli, string input, Translation r)
{
    if (cli.Format == "jsonl")
    {
        // n_best: every returned hypothesis, ids as Hugging Face's generate returns them, score length-penalised.
        var line = new { input, output = r.Text, ids = r.Ids, n_best = r.Hypotheses.Select(h => new { ids = h.Sequence, output = h.Text, score = h.Hypothesis.Score }) };
        Console.WriteLine(JsonSerializer.Serialize(line, JsonOptions.Value));
        return;
    }
    if (cli.Decoding.NBest > 1)
        foreach (var h in r.Hypotheses) Console.WriteLine($"{h.Hypothesis.Score.ToString("F4", CultureInfo.InvariantCulture)}\t{h.Text}");
    else Console.WriteLine(r.Text);
}

static void WriteError(CommandLine cli, string input, string message)
{
    Console.Error.WriteLine($"translate: {message}");
    Console.WriteLine(cli.Format == "jsonl" ? JsonSerializer.Serialize(new { input, error = message }, JsonOptions.Value) : "ERROR");
}

static class JsonOptions
{
    // Keep Devanagari readable in the output instead of \uXXXX escapes.
    public static readonly JsonSerializerOptions Value = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}

sealed class UsageException(string message) : Exception(message);

sealed class CommandLine
{
    public const string Usage = """
        translate — translate sentences with a TransformerInference model

        Usage: translate [options] [SENTENCE...]
          With no sentence, reads stdin (one sentence a line) and writes one line per input.
          With no arguments at all, translates "I love you so much" with the bundled demo model (stdin is not
          read then: give any option, e.g. --format text, to translate stdin with the demo model).

        Model:
          --checkpoint F.pt        seed checkpoint (torch.save, either naming scheme)
          --model FOLDER           model folder (config.json + model.safetensors)
          --src-tokenizer F        source tokenizer.json (Hugging Face WordLevel)
          --tgt-tokenizer F        target tokenizer.json
                                   (a Hugging Face Marian / M2M100 / NLLB folder given to --model needs neither)
          --src-lang L  --tgt-lang L   languages of multilingual models (M2M100: en, ne; NLLB: eng_Latn, npi_Deva)
          --heads N                attention heads of a seed checkpoint (default: h of model_args.json beside it, else 8)
          --device cpu|cuda        (default cpu; cuda needs the build property TorchBackend=cuda)
          --quantize none|int8|bf16  linear-layer weights: as loaded (default), int8 per output channel, or bfloat16;
                                   quantized at load, activations stay float32 (CPU)
        Input / output:
          --input-format text|ids  ids: each line holds space-separated source ids ([SOS] ... [EOS] included)
          --format text|jsonl      jsonl: {"input","output","ids","n_best":[{"ids","output","score"}]} or
                                   {"input","error"} per line; n_best ids start with the decoder start token and
                                   end with [EOS], score is the length-penalised beam score
          --batch-size N           sentences decoded together (default 32)
          --stream                 print tokens as they are produced
        Decoding:
          --max-length N           longest target sequence, [SOS] included (Hugging Face's max_length; default: the
                                   model folder's, else the model's target positions)
          --max-new-tokens N       most generated tokens
          --min-new-tokens N       --ignore-eos
          --min-length N           Hugging Face's min_length: [EOS] banned while the sequence, [SOS] included, is shorter
          --beam N  --n-best N  --length-penalty X   (num_beams, num_return_sequences, length_penalty)
          --early-stopping true|false|never   when beam search stops (Hugging Face's early_stopping; default false)
          --sample  --temperature X  --top-k N  --top-p X  --seed N
          --repetition-penalty X  --no-repeat-ngram N
        """;

    public bool Help { get; private set; }
    public string ModelPath { get; private set; } = "";
    public string SourceTokenizer { get; private set; } = "";
    public string TargetTokenizer { get; private set; } = "";
    public int Heads { get; private set; } = 8;
    public torch.Device Device { get; private set; } = torch.CPU;
    public WeightQuantization Quantization { get; private set; }
    public string Format { get; private set; } = "text";
    public string InputFormat { get; private set; } = "text";
    public int BatchSize { get; private set; } = 32;
    public bool Stream { get; private set; }
    public bool UsingDemo { get; private set; }
    public bool NoArguments { get; private set; }
    public DecodingOptions Decoding { get; private set; } = new();
    public bool DecodingGiven { get; private set; }
    public string? SourceLanguage { get; private set; }
    public string? TargetLanguage { get; private set; }
    public List<string> Sentences { get; } = new();

    public static CommandLine Parse(string[] args)
    {
        var c = new CommandLine { NoArguments = args.Length == 0 };
        string? checkpoint = null, folder = null, src = null, tgt = null;
        int? heads = null, maxLength = null;
        var d = new DecodingOptions();
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{a} needs a value");
            int Int() => int.TryParse(Value(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new UsageException($"{a} needs an integer, got '{args[i]}'");
            double Num() => double.TryParse(Value(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : throw new UsageException($"{a} needs a number, got '{args[i]}'");
            switch (a)
            {
                case "-h" or "--help": c.Help = true; break;
                case "--checkpoint": checkpoint = Value(); break;
                case "--model": folder = Value(); break;
                case "--src-tokenizer": src = Value(); break;
                case "--tgt-tokenizer": tgt = Value(); break;
                case "--heads": heads = Int(); break;
                case "--src-lang": c.SourceLanguage = Value(); break;
                case "--tgt-lang": c.TargetLanguage = Value(); break;
                case "--device":
                    c.Device = Value() switch
                    {
                        "cpu" => torch.CPU,
                        "cuda" => torch.cuda.is_available() ? torch.CUDA : throw new UsageException("CUDA is not available: build with -p:TorchBackend=cuda on a machine with an NVIDIA GPU"),
                        var other => throw new UsageException($"--device must be cpu or cuda, got '{other}'"),
                    };
                    break;
                case "--quantize":
                    c.Quantization = Value() switch
                    {
                        "none" => WeightQuantization.None,
                        "int8" => WeightQuantization.Int8,
                        "bf16" or "bfloat16" => WeightQuantization.BFloat16,
                        var other => throw new UsageException($"--quantize must be none, int8 or bf16, got '{other}'"),
                    };
                    break;
                case "--format": c.Format = Value() is "text" or "jsonl" ? args[i] : throw new UsageException($"--format must be text or jsonl, got '{args[i]}'"); break;
                case "--input-format": c.InputFormat = Value() is "text" or "ids" ? args[i] : throw new UsageException($"--input-format must be text or ids, got '{args[i]}'"); break;
                case "--batch-size": c.BatchSize = Int() is > 0 and var b ? b : throw new UsageException("--batch-size must be positive"); break;
                case "--stream": c.Stream = true; break;
                case "--max-length": maxLength = Int(); break;
                case "--max-new-tokens": d = d with { MaxNewTokens = Int() }; break;
                case "--min-new-tokens": d = d with { MinNewTokens = Int() }; break;
                case "--ignore-eos": d = d with { IgnoreEos = true }; break;
                case "--min-length": d = d with { MinLength = Int() }; break;
                case "--early-stopping":
                    d = d with
                    {
                        EarlyStopping = Value() switch
                        {
                            "true" => EarlyStopping.Immediate,
                            "false" => EarlyStopping.Heuristic,
                            "never" => EarlyStopping.Never,
                            var other => throw new UsageException($"--early-stopping must be true, false or never, got '{other}'"),
                        },
                    };
                    break;
                case "--beam": d = d with { BeamSize = Int() }; break;
                case "--n-best": d = d with { NBest = Int() }; break;
                case "--length-penalty": d = d with { LengthPenalty = Num() }; break;
                case "--sample": d = d with { Sample = true }; break;
                case "--temperature": d = d with { Temperature = Num() }; break;
                case "--top-k": d = d with { TopK = Int() }; break;
                case "--top-p": d = d with { TopP = Num() }; break;
                case "--seed": d = d with { Seed = Int() }; break;
                case "--repetition-penalty": d = d with { RepetitionPenalty = Num() }; break;
                case "--no-repeat-ngram": d = d with { NoRepeatNgramSize = Int() }; break;
                case "--": c.Sentences.AddRange(args.Skip(i + 1)); i = args.Length; break;
                default:
                    if (a.StartsWith("--", StringComparison.Ordinal)) throw new UsageException($"unknown option {a}");
                    c.Sentences.Add(a);
                    break;
            }
        }
        if (maxLength is { } ml)
        {
            if (ml < 2) throw new UsageException("--max-length must be at least 2 ([SOS] and one token)");
            // Hugging Face's max_length: reduced to the model's target positions when it asks for more.
            if (d.MaxNewTokens is null) d = d with { MaxLength = ml };
        }
        c.DecodingGiven = d != new DecodingOptions();
        try { c.Decoding = d.Validate(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }

        if (checkpoint is not null && folder is not null) throw new UsageException("give --checkpoint or --model, not both");
        if (checkpoint is null && folder is null)
        {
            if (src is not null || tgt is not null) throw new UsageException("--src-tokenizer/--tgt-tokenizer need --checkpoint or --model");
            var demo = Path.Combine(AppContext.BaseDirectory, "DemoModel");
            checkpoint = Path.Combine(demo, "tmodel.pt");
            src = Path.Combine(demo, "tokenizer_en.json");
            tgt = Path.Combine(demo, "tokenizer_ne.json");
            c.UsingDemo = true;
        }
        c.ModelPath = (checkpoint ?? folder)!;
        if (c.InputFormat == "text")
        {
            var huggingFace = folder is not null && File.Exists(Path.Combine(folder, "tokenizer_config.json"));
            if ((src is null || tgt is null) && !huggingFace)
                throw new UsageException("text input needs --src-tokenizer and --tgt-tokenizer (or a Hugging Face folder, or --input-format ids)");
            c.SourceTokenizer = src ?? "";
            c.TargetTokenizer = tgt ?? "";
        }
        else if (c.Stream) throw new UsageException("--stream needs text input");
        c.Heads = heads ?? HeadsFromModelArgs(checkpoint) ?? 8;
        return c;
    }

    /// <summary>The seed's training scripts write model_args.json beside the checkpoint; its "h" is the head count.</summary>
    private static int? HeadsFromModelArgs(string? checkpoint)
    {
        if (checkpoint is null) return null;
        var path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(checkpoint)) ?? ".", "model_args.json");
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            return doc.RootElement.TryGetProperty("h", out var h) && h.TryGetInt32(out var v) ? v : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
