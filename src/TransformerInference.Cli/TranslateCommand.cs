using System.CommandLine;
using System.CommandLine.Parsing;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using TorchSharp;

namespace TransformerInference.Cli;

/// <summary><c>transformer-inference translate</c>: text (or source ids) in, one output line per input line.</summary>
internal static class TranslateCommand
{
    // Model
    private static readonly Option<string?> Model = new("--model") { Description = "Model folder: a Hugging Face Marian / M2M100 / NLLB folder (carries its tokenizer), or config.json + model.safetensors (needs --src-tokenizer/--tgt-tokenizer)", HelpName = "DIR" };
    private static readonly Option<string?> Checkpoint = new("--checkpoint") { Description = "Seed checkpoint (torch.save file, either naming scheme)", HelpName = "FILE" };
    private static readonly Option<string?> SourceTokenizer = new("--src-tokenizer") { Description = "Source tokenizer.json (Hugging Face WordLevel) of a seed model", HelpName = "FILE" };
    private static readonly Option<string?> TargetTokenizer = new("--tgt-tokenizer") { Description = "Target tokenizer.json of a seed model", HelpName = "FILE" };
    private static readonly Option<string?> SourceLanguage = new("--src-lang") { Description = "Source language of a multilingual model (M2M100: en; NLLB: eng_Latn) [default: the tokenizer's]", HelpName = "LANG" };
    private static readonly Option<string?> TargetLanguage = new("--tgt-lang") { Description = "Target language of a multilingual model (M2M100: ne; NLLB: npi_Deva) [default: the tokenizer's]", HelpName = "LANG" };
    private static readonly Option<int?> Heads = new("--heads") { Description = "Attention heads of a seed checkpoint [default: h of model_args.json beside it, else 8]", HelpName = "N" };
    private static readonly Option<string> Device = new("--device") { Description = "cpu, cuda or cuda:N (cuda needs a CUDA build of the backend)", HelpName = "DEVICE", DefaultValueFactory = _ => "cpu" };
    private static readonly Option<string> DType = new("--dtype") { Description = "Weights and activations: float32, bfloat16 (faster products on recent CPUs) or float16 (GPU only)", HelpName = "TYPE", DefaultValueFactory = _ => "float32" };
    private static readonly Option<string> Quantize = new("--quantize") { Description = $"Linear-layer weights: {string.Join(", ", QuantizeNames)}; made at load from the float checkpoint and run by our CPU kernels, activations stay float32 (CPU, --dtype float32)", HelpName = "TYPE", DefaultValueFactory = _ => "none" };

    /// <summary>Every <see cref="WeightQuantization"/> the library has, by lower-case name (bf16 also for bfloat16).</summary>
    private static string[] QuantizeNames => Enum.GetNames<WeightQuantization>().Select(n => n.ToLowerInvariant())
        .Concat(Enum.GetNames<WeightQuantization>().Any(n => n == "BFloat16") ? new[] { "bf16" } : Array.Empty<string>()).ToArray();

    private static WeightQuantization ParseQuantize(string value) =>
        Enum.Parse<WeightQuantization>(value == "bf16" ? "BFloat16" : value, ignoreCase: true);
    private static readonly Option<int?> Threads = new("--threads") { Description = "CPU threads for LibTorch [default: LibTorch's]", HelpName = "N" };
    // Input / output
    private static readonly Option<string?> Input = new("--input", "-i") { Description = "Read lines from FILE [default: the TEXT arguments, else stdin]", HelpName = "FILE" };
    private static readonly Option<string?> Output = new("--output", "-o") { Description = "Write to FILE [default: stdout]", HelpName = "FILE" };
    private static readonly Option<string> InputFormat = new("--input-format") { Description = "text, or ids: each line holds space-separated source ids (start and end tokens included)", HelpName = "FORMAT", DefaultValueFactory = _ => "text" };
    private static readonly Option<string> Format = new("--format") { Description = "text (n-best: 'index ||| text ||| score' lines), or jsonl: {\"input\",\"output\",\"ids\",\"n_best\":[{\"ids\",\"output\",\"score\"}]} or {\"input\",\"error\"} per line (n_best ids as generate returns them, score length-penalised)", HelpName = "FORMAT", DefaultValueFactory = _ => "text" };
    private static readonly Option<int> BatchSize = new("--batch-size") { Description = "Lines decoded together", HelpName = "N", DefaultValueFactory = _ => 32 };
    private static readonly Option<bool> Stream = new("--stream") { Description = "Write each translation token by token as it is produced (text input and output, one hypothesis)" };
    private static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "No progress on stderr (shown only when stderr is a terminal and the translations go to a file or a pipe)" };
    private static readonly Option<bool> Verbose = new("--verbose", "-v") { Description = "A one-line summary on stderr at the end (lines, tokens, time, speed)" };
    // Decoding
    private static readonly Option<int?> MaxLength = new("--max-length") { Description = "Longest target sequence, start token included [default: the model's or the folder's max_length]", HelpName = "N" };
    private static readonly Option<int?> MaxNewTokens = new("--max-new-tokens") { Description = "Most generated tokens [default: from --max-length]", HelpName = "N" };
    private static readonly Option<int?> MinNewTokens = new("--min-new-tokens") { Description = "Fewest generated tokens before the end token is allowed [default: 0]", HelpName = "N" };
    private static readonly Option<bool> IgnoreEos = new("--ignore-eos") { Description = "Generate until the length limit (benchmarks)" };
    private static readonly Option<int?> Beam = new("--beam") { Description = "Beam size; 1 is greedy [default: 1, or the folder's num_beams]", HelpName = "N" };
    private static readonly Option<int?> NBest = new("--n-best") { Description = "Hypotheses written per input, at most --beam [default: 1]", HelpName = "N" };
    private static readonly Option<double?> LengthPenalty = new("--length-penalty") { Description = "Beam score = log-probability / length^X [default: 1.0, or the folder's]", HelpName = "X" };
    private static readonly Option<string?> EarlyStoppingMode = new("--early-stopping") { Description = "When beam search stops (Hugging Face's early_stopping): true (at --beam finished), false (when no open beam can beat the finished ones at its length), never (judged at the length limit) [default: false, or the folder's]", HelpName = "true|false|never" };
    private static readonly Option<int?> MinLength = new("--min-length") { Description = "Hugging Face's min_length: the end token is banned while the sequence, start token included, is shorter [default: 0, or the folder's]", HelpName = "N" };
    private static readonly Option<bool> Sample = new("--sample") { Description = "Sample instead of searching (not with --beam > 1)" };
    private static readonly Option<double?> Temperature = new("--temperature") { Description = "Sampling temperature, with --sample [default: 1.0]", HelpName = "X" };
    private static readonly Option<int?> TopK = new("--top-k") { Description = "Sample among the K likeliest tokens, with --sample [default: 0, off]", HelpName = "K" };
    private static readonly Option<double?> TopP = new("--top-p") { Description = "Nucleus sampling mass, with --sample [default: 1.0, off]", HelpName = "P" };
    private static readonly Option<int?> Seed = new("--seed") { Description = "Random seed, with --sample [default: random]", HelpName = "N" };
    private static readonly Option<double?> RepetitionPenalty = new("--repetition-penalty") { Description = "Penalty above 1 for tokens already generated [default: 1.0, off]", HelpName = "X" };
    private static readonly Option<int?> NoRepeatNgram = new("--no-repeat-ngram") { Description = "Never repeat an n-gram of this size [default: 0, off]", HelpName = "N" };
    private static readonly Argument<string[]> Text = new("TEXT") { Description = "Sentences to translate (none: lines of --input or stdin); put them after -- if one starts with '-'", Arity = ArgumentArity.ZeroOrMore };

    public static Command Create(Io io)
    {
        var command = new Command("translate", "Translate sentences, a file or stdin: one output line per input line.")
        {
            Model, Checkpoint, SourceTokenizer, TargetTokenizer, SourceLanguage, TargetLanguage, Heads, Device, DType, Quantize, Threads,
            Input, Output, InputFormat, Format, BatchSize, Stream, Quiet, Verbose,
            MaxLength, MaxNewTokens, MinNewTokens, MinLength, IgnoreEos, Beam, NBest, LengthPenalty, EarlyStoppingMode, Sample, Temperature, TopK, TopP, Seed,
            RepetitionPenalty, NoRepeatNgram, Text,
            new Option<bool>("--version") { Description = "Show the version and exit" },
        };
        InputFormat.AcceptOnlyFromAmong("text", "ids");
        Format.AcceptOnlyFromAmong("text", "jsonl");
        DType.AcceptOnlyFromAmong("float32", "bfloat16", "float16");
        Quantize.AcceptOnlyFromAmong(QuantizeNames);
        command.SetAction((parse, ct) => RunAsync(parse, io, ct));
        return command;
    }

    /// <summary>Everything a run needs, checked before any model is loaded.</summary>
    private sealed record Settings
    {
        public required string ModelPath { get; init; }
        public bool HuggingFace { get; init; }
        public string? SourceTokenizer { get; init; }
        public string? TargetTokenizer { get; init; }
        public required TranslatorOptions Translator { get; init; }
        public required DecodingOptions Decoding { get; init; }
        public bool Ids { get; init; }
        public bool Jsonl { get; init; }
        public bool Stream { get; init; }
        public int BatchSize { get; init; }
        public string? Input { get; init; }
        public string? Output { get; init; }
        public IReadOnlyList<string> Sentences { get; init; } = Array.Empty<string>();
        public bool Quiet { get; init; }
        public bool Verbose { get; init; }
        public int? MaxNewTokensFlag { get; init; }
    }

    private static async Task<int> RunAsync(ParseResult parse, Io io, CancellationToken ct)
    {
        var s = Check(parse);
        if (s.Input is { } input && !File.Exists(input)) throw new FileNotFoundException($"--input: the file '{input}' does not exist.", input);
        using var file = s.Output is { } path ? new StreamWriter(path, append: false, new UTF8Encoding(false)) { NewLine = "\n" } : null;
        var output = file ?? io.Stdout;
        using var reader = s.Input is { } inputPath ? new StreamReader(inputPath, Encoding.UTF8) : null;
        var lines = s.Sentences.Count > 0 ? s.Sentences : ReadLines(reader ?? io.Stdin);
        var stats = new Stats();
        var code = await Progress.RunAsync(io, s.Quiet, toFile: s.Output is not null, status => s.Ids
            ? RunIds(s, lines, output, io, stats, status, ct)
            : RunText(s, lines, output, io, stats, status, ct));
        output.Flush();
        if (s.Verbose)
        {
            var seconds = Math.Max(stats.Decode.Elapsed.TotalSeconds, 1e-9);
            io.Stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{CliApp.Name}: {stats.Lines} lines ({stats.Failed} failed) in {stats.Batches} batches, {stats.Tokens} tokens in {seconds:F2} s: " +
                $"{stats.Lines / seconds:F1} lines/s, {stats.Tokens / seconds:F1} tokens/s; model load {stats.Load.TotalSeconds:F2} s"));
        }
        return code;
    }

    private static IEnumerable<string> ReadLines(TextReader reader)
    {
        while (reader.ReadLine() is { } line) yield return line;
    }

    /// <summary>Usage checks: conflicting or ignored flags and values wrong for every input, each naming its flag.</summary>
    private static Settings Check(ParseResult p)
    {
        T? Given<T>(Option<T> o) => p.GetResult(o) is { Implicit: false } ? p.GetValue(o) : default;
        bool Has(Option o) => p.GetResult(o) is { Implicit: false };
        void Conflict(bool bad, string message)
        {
            if (bad) throw new UsageException(message);
        }

        // Unknown single-dash flags would otherwise be translated as text (-b 4, -v…): reject them unless after --.
        var texts = p.GetResult(Text)?.Tokens ?? (IReadOnlyList<Token>)Array.Empty<Token>();
        var doubleDash = p.Tokens.ToList().FindIndex(t => t.Type == TokenType.DoubleDash);
        foreach (var token in texts)
        {
            var index = p.Tokens.ToList().FindIndex(t => ReferenceEquals(t, token));
            if (token.Value.Length > 1 && token.Value[0] == '-' && (doubleDash < 0 || index < doubleDash))
                throw new UsageException($"unknown option {token.Value} (to translate text that starts with '-', put it after --)");
        }
        var sentences = p.GetValue(Text) ?? Array.Empty<string>();

        Conflict(Has(Quiet) && Has(Verbose), "--quiet and --verbose contradict each other");
        Conflict(Has(Input) && sentences.Length > 0, "give TEXT arguments or --input, not both");
        var batch = p.GetValue(BatchSize);
        Conflict(batch < 1, $"--batch-size must be at least 1, got {batch}");
        Conflict(Given(Threads) is < 1, $"--threads must be at least 1, got {Given(Threads)}");
        Conflict(Given(Heads) is < 1, $"--heads must be at least 1, got {Given(Heads)}");

        // The model.
        var folder = Given(Model);
        var checkpoint = Given(Checkpoint);
        Conflict(folder is not null && checkpoint is not null, "give --model or --checkpoint, not both");
        Conflict(folder is null && checkpoint is null, "--model DIR or --checkpoint FILE is required");
        if (folder is not null && !Directory.Exists(folder))
            throw File.Exists(folder)
                ? new UsageException($"--model takes a folder; '{folder}' is a file (a torch.save checkpoint goes to --checkpoint)")
                : new DirectoryNotFoundException($"--model: the folder '{folder}' does not exist.");
        if (checkpoint is not null && !File.Exists(checkpoint))
            throw new FileNotFoundException($"--checkpoint: the file '{checkpoint}' does not exist.", checkpoint);
        var family = folder is null ? null : Family.Read(folder);

        var ids = p.GetValue(InputFormat) == "ids";
        var srcTok = Given(SourceTokenizer);
        var tgtTok = Given(TargetTokenizer);
        if (ids)
        {
            Conflict(srcTok is not null, "--src-tokenizer is not used with --input-format ids");
            Conflict(tgtTok is not null, "--tgt-tokenizer is not used with --input-format ids");
            Conflict(Has(SourceLanguage), "--src-lang is not used with --input-format ids (the ids carry the language token)");
            Conflict(Has(TargetLanguage), "--tgt-lang is not used with --input-format ids");
            Conflict(Has(Stream), "--stream needs text input, not --input-format ids");
        }
        else if (family?.HasTokenizer == true)
        {
            Conflict(srcTok is not null, $"--src-tokenizer is not used: the {family.Name} folder carries its tokenizer");
            Conflict(tgtTok is not null, $"--tgt-tokenizer is not used: the {family.Name} folder carries its tokenizer");
        }
        else
        {
            Conflict(srcTok is null || tgtTok is null,
                "text input needs --src-tokenizer and --tgt-tokenizer (or a Hugging Face folder, or --input-format ids)");
        }
        foreach (var (option, language) in new[] { (SourceLanguage, Given(SourceLanguage)), (TargetLanguage, Given(TargetLanguage)) })
        {
            if (language is null) continue;
            Conflict(family?.Languages is null,
                $"{option.Name} is not used: {(family is null ? "a seed checkpoint" : $"this {family.Name} model")} has no language codes" +
                (family?.Name == "Marian" ? " (multilingual Marian models take a >>xx<< prefix in the text)" : ""));
            Conflict(!family!.Languages!.Contains(language, StringComparer.Ordinal),
                $"{option.Name} {language} is not a language of this model (e.g. {string.Join(", ", family.Languages!.Take(6))})");
        }

        var quantization = ParseQuantize(p.GetValue(Quantize)!);
        var quantized = quantization != WeightQuantization.None;
        Conflict(quantized && p.GetValue(DType) != "float32", $"--quantize {p.GetValue(Quantize)} applies to float32 weights, not --dtype {p.GetValue(DType)}");
        Conflict(quantized && p.GetValue(Device) != "cpu", $"--quantize {p.GetValue(Quantize)} runs on the CPU kernels: not with --device {p.GetValue(Device)}");

        // Streaming writes one hypothesis as plain text.
        var jsonl = p.GetValue(Format) == "jsonl";
        if (Has(Stream))
        {
            Conflict(jsonl, "--stream writes plain text: it cannot be combined with --format jsonl");
            Conflict(Given(NBest) is > 1, "--stream writes one hypothesis: it cannot be combined with --n-best");
        }

        // Decoding: the family's defaults (a Hugging Face folder's generation_config.json), then each flag given.
        Conflict(Has(MaxLength) && Has(MaxNewTokens), "give --max-length or --max-new-tokens, not both");
        var sample = p.GetValue(Sample);
        foreach (var option in new Option[] { Temperature, TopK, TopP, Seed })
            Conflict(Has(option) && !sample, $"{option.Name} applies to sampling: add --sample");
        var d = family?.GenerationDefaults ?? new DecodingOptions();
        if (Given(MaxLength) is { } maxLength) d = d with { MaxLength = maxLength, MaxNewTokens = null };
        if (Given(MaxNewTokens) is { } maxNew) d = d with { MaxNewTokens = maxNew };
        if (Given(MinNewTokens) is { } minNew) d = d with { MinNewTokens = minNew };
        if (Has(IgnoreEos)) d = d with { IgnoreEos = true };
        if (Given(Beam) is { } beam) d = d with { BeamSize = beam };
        if (sample) d = d with { Sample = true, BeamSize = Given(Beam) ?? 1 };
        if (Given(NBest) is { } nBest) d = d with { NBest = nBest };
        if (Given(LengthPenalty) is { } lengthPenalty) d = d with { LengthPenalty = lengthPenalty };
        if (Given(MinLength) is { } minLength) d = d with { MinLength = minLength };
        if (p.GetValue(EarlyStoppingMode) is { } stopping)
        {
            d = d with
            {
                EarlyStopping = stopping switch
                {
                    "true" => EarlyStopping.Immediate,
                    "false" => EarlyStopping.Heuristic,
                    "never" => EarlyStopping.Never,
                    _ => throw new UsageException($"--early-stopping must be true, false or never, got '{stopping}'"),
                },
            };
        }
        if (Given(Temperature) is { } temperature) d = d with { Temperature = temperature };
        if (Given(TopK) is { } topK) d = d with { TopK = topK };
        if (Given(TopP) is { } topP) d = d with { TopP = topP };
        if (Given(Seed) is { } seed) d = d with { Seed = seed };
        if (Given(RepetitionPenalty) is { } repetition) d = d with { RepetitionPenalty = repetition };
        if (Given(NoRepeatNgram) is { } ngram) d = d with { NoRepeatNgramSize = ngram };
        Conflict(Has(LengthPenalty) && d.BeamSize == 1, "--length-penalty applies to beam search: add --beam N (N > 1)");
        Conflict(Has(Beam) && sample && d.BeamSize > 1, "--sample cannot be combined with --beam > 1");
        foreach (var (name, value) in new[] { ("--length-penalty", d.LengthPenalty), ("--temperature", d.Temperature), ("--top-p", d.TopP), ("--repetition-penalty", d.RepetitionPenalty) })
            Conflict(!double.IsFinite(value), $"{name} {value.ToString(CultureInfo.InvariantCulture)}: must be a finite number");
        try
        {
            d = d.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UsageException(AsTyped(p, e));
        }

        return new Settings
        {
            ModelPath = (folder ?? checkpoint)!,
            HuggingFace = family?.HasTokenizer == true,
            SourceTokenizer = srcTok,
            TargetTokenizer = tgtTok,
            Translator = new TranslatorOptions
            {
                Device = ParseDevice(p.GetValue(Device)!),
                DType = p.GetValue(DType) switch
                {
                    "bfloat16" => torch.ScalarType.BFloat16,
                    "float16" => torch.ScalarType.Float16,
                    _ => torch.ScalarType.Float32,
                },
                Heads = Given(Heads), // null: the library reads model_args.json beside a seed checkpoint
                Quantization = quantization,
                MaxBatchSize = batch,
                Threads = Given(Threads),
                Decoding = d,
                SourceLanguage = Given(SourceLanguage),
                TargetLanguage = Given(TargetLanguage),
            },
            Decoding = d,
            Ids = ids,
            Jsonl = jsonl,
            Stream = Has(Stream),
            BatchSize = batch,
            Input = Given(Input),
            Output = Given(Output),
            Sentences = sentences,
            Quiet = Has(Quiet),
            Verbose = Has(Verbose),
            MaxNewTokensFlag = Given(MaxNewTokens),
        };
    }

    /// <summary>A library message about an option, prefixed with the flag and the value as the user typed them.</summary>
    private static string AsTyped(ParseResult p, ArgumentException e)
    {
        var message = Flags.Rewrite(e);
        if (e.ParamName is null || !Flags.ByMember.TryGetValue(e.ParamName, out var flag)) return message;
        var typed = p.CommandResult.Children.OfType<OptionResult>().FirstOrDefault(o => o.Option.Name == flag)?.Tokens.FirstOrDefault()?.Value;
        return typed is null ? message : $"{flag} {typed}: {message}";
    }

    private static torch.Device ParseDevice(string value)
    {
        if (value == "cpu") return torch.CPU;
        if (value == "cuda" || value.StartsWith("cuda:", StringComparison.Ordinal))
        {
            var index = value == "cuda" ? 0 : int.TryParse(value.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out var i) ? i
                : throw new UsageException($"--device must be cpu, cuda or cuda:N, got '{value}'");
            if (!torch.cuda.is_available())
                throw new UsageException("--device cuda: CUDA is not available (this build carries the CPU backend; build with -p:TorchBackend=cuda on a machine with an NVIDIA GPU)");
            if (index >= torch.cuda.device_count())
                throw new UsageException($"--device {value}: there are {torch.cuda.device_count()} CUDA devices");
            return new torch.Device(DeviceType.CUDA, index);
        }
        throw new UsageException($"--device must be cpu, cuda or cuda:N, got '{value}'");
    }

    /// <summary>Values wrong for every input, found once the model's limits are known. (--max-length is Hugging Face's
    /// max_length: a value above the model's positions is reduced to them, as there.)</summary>
    private static void CheckLimits(Settings s, int maxTargetLength)
    {
        if (s.MaxNewTokensFlag is { } mn && mn > maxTargetLength)
            throw new UsageException($"--max-new-tokens {mn} exceeds the model's {maxTargetLength} target positions");
        if (s.Decoding.MinNewTokens > maxTargetLength)
            throw new UsageException($"--min-new-tokens {s.Decoding.MinNewTokens} exceeds the model's {maxTargetLength} target positions");
    }

    private static async Task<int> RunText(Settings s, IEnumerable<string> lines, TextWriter output, Io io, Stats stats,
        Action<string> status, CancellationToken ct)
    {
        status("loading the model");
        var load = Stopwatch.StartNew();
        Translator translator;
        try
        {
            translator = s.HuggingFace
                ? Translator.Load(s.ModelPath, s.Translator)
                : Translator.Load(s.ModelPath, s.SourceTokenizer!, s.TargetTokenizer!, s.Translator);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(Flags.Rewrite(e)); // an option the model cannot take (--heads, a language…)
        }
        using var _ = translator;
        stats.Load = load.Elapsed;
        CheckLimits(s, translator.Model.MaxTargetLength);
        stats.Decode.Start();
        var index = 0;
        foreach (var batch in lines.Chunk(s.BatchSize))
        {
            ct.ThrowIfCancellationRequested();
            if (s.Stream)
            {
                foreach (var line in batch)
                {
                    stats.Batches++;
                    try
                    {
                        await foreach (var piece in translator.TranslateStreamAsync(line, cancellationToken: ct))
                        {
                            output.Write(OneLine(piece));
                            output.Flush();
                            stats.Tokens++;
                        }
                        output.WriteLine();
                    }
                    catch (ArgumentException e)
                    {
                        Fail(s, output, io, stats, index, line, e);
                    }
                    index++;
                    stats.Lines++;
                    status(stats.Describe());
                }
                continue;
            }
            var outcomes = new (Translation? Result, Exception? Error)[batch.Length];
            try
            {
                stats.Batches++;
                var results = translator.TranslateDetailed(batch, cancellationToken: ct);
                for (var i = 0; i < batch.Length; i++) outcomes[i] = (results[i], null);
            }
            catch (ArgumentException)
            {
                // Some line is unusable (too long): translate one by one so the others still come out.
                for (var i = 0; i < batch.Length; i++)
                {
                    stats.Batches++;
                    try { outcomes[i] = (translator.TranslateDetailed(new[] { batch[i] }, cancellationToken: ct)[0], null); }
                    catch (ArgumentException e) { outcomes[i] = (null, e); }
                }
            }
            for (var i = 0; i < batch.Length; i++, index++)
            {
                if (outcomes[i].Result is { } r)
                {
                    WriteTranslation(s, output, index, batch[i], r);
                    stats.Tokens += r.Ids.Count;
                }
                else Fail(s, output, io, stats, index, batch[i], outcomes[i].Error!);
                stats.Lines++;
            }
            status(stats.Describe());
        }
        stats.Decode.Stop();
        return stats.Failed > 0 ? ExitCodes.SomeInputsFailed : ExitCodes.Success;
    }

    private static Task<int> RunIds(Settings s, IEnumerable<string> lines, TextWriter output, Io io, Stats stats,
        Action<string> status, CancellationToken ct)
    {
        status("loading the model");
        var load = Stopwatch.StartNew();
        if (s.Translator.Threads is { } threads) torch.set_num_threads(threads);
        TransformerModel model;
        try
        {
            model = ModelLoader.Load(s.ModelPath, new ModelLoadOptions
            {
                Device = s.Translator.Device, DType = s.Translator.DType, Heads = s.Translator.Heads, Quantization = s.Translator.Quantization,
            });
        }
        catch (ArgumentException e)
        {
            throw new UsageException(Flags.Rewrite(e));
        }
        using var _ = model;
        stats.Load = load.Elapsed;
        CheckLimits(s, model.MaxTargetLength);
        var start = s.Decoding.DecoderStartTokenId ?? model.SosId;
        stats.Decode.Start();
        var index = 0;
        foreach (var batch in lines.Chunk(s.BatchSize))
        {
            ct.ThrowIfCancellationRequested();
            // Parse every line; the good ones are decoded together (one batch, as --batch-size says).
            var sources = new int[]?[batch.Length];
            var errors = new Exception?[batch.Length];
            for (var i = 0; i < batch.Length; i++)
            {
                try { sources[i] = ParseIds(batch[i], model.Config.SourceVocabSize); }
                catch (ArgumentException e) { errors[i] = e; }
            }
            var valid = Enumerable.Range(0, batch.Length).Where(i => sources[i] is not null).ToArray();
            var hypotheses = new IReadOnlyList<Hypothesis>?[batch.Length];
            if (valid.Length > 0)
            try
            {
                stats.Batches++;
                var results = Generator.Generate(model, valid.Select(i => (IReadOnlyList<int>)sources[i]!).ToArray(), s.Decoding, cancellationToken: ct);
                for (var j = 0; j < valid.Length; j++) hypotheses[valid[j]] = results[j];
            }
            catch (ArgumentException)
            {
                foreach (var i in valid)
                {
                    stats.Batches++;
                    try { hypotheses[i] = Generator.Generate(model, new[] { (IReadOnlyList<int>)sources[i]! }, s.Decoding, cancellationToken: ct)[0]; }
                    catch (ArgumentException e) { errors[i] = e; }
                }
            }
            for (var i = 0; i < batch.Length; i++, index++)
            {
                stats.Lines++;
                if (hypotheses[i] is not { } h)
                {
                    Fail(s, output, io, stats, index, batch[i], errors[i]!);
                    continue;
                }
                stats.Tokens += h[0].Ids.Count;
                int[] Full(Hypothesis x) => new[] { start }.Concat(x.Ids).Concat(x.Finished ? new[] { model.EosId } : Array.Empty<int>()).ToArray();
                if (s.Jsonl)
                {
                    var record = new { input = batch[i], ids = Full(h[0]), n_best = h.Select(x => new { ids = Full(x), score = x.Score }) };
                    output.WriteLine(JsonSerializer.Serialize(record, Json.Options));
                }
                else if (s.Decoding.NBest > 1)
                    foreach (var x in h) output.WriteLine($"{index} ||| {string.Join(' ', Full(x))} ||| {Score(x.Score)}");
                else output.WriteLine(string.Join(' ', Full(h[0])));
            }
            status(stats.Describe());
        }
        stats.Decode.Stop();
        return Task.FromResult(stats.Failed > 0 ? ExitCodes.SomeInputsFailed : ExitCodes.Success);
    }

    private static int[] ParseIds(string line, int vocab) =>
        line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
            .Select(t => int.TryParse(t, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) && v >= 0 && v < vocab
                ? v : throw new ArgumentException($"'{t}' is not a source token id (0..{vocab - 1})."))
            .ToArray();

    private static void WriteTranslation(Settings s, TextWriter output, int index, string input, Translation r)
    {
        if (s.Jsonl)
        {
            // n_best: every returned hypothesis, ids as Hugging Face's generate returns them, score length-penalised.
            var record = new { input, output = r.Text, ids = r.Ids, n_best = r.Hypotheses.Select(h => new { ids = h.Sequence, output = h.Text, score = h.Hypothesis.Score }) };
            output.WriteLine(JsonSerializer.Serialize(record, Json.Options));
        }
        else if (s.Decoding.NBest > 1)
            foreach (var h in r.Hypotheses) output.WriteLine($"{index} ||| {OneLine(h.Text)} ||| {Score(h.Hypothesis.Score)}");
        else output.WriteLine(OneLine(r.Text));
    }

    private static void Fail(Settings s, TextWriter output, Io io, Stats stats, int index, string input, Exception e)
    {
        var message = Flags.Rewrite(e);
        stats.Failed++;
        io.Stderr.WriteLine($"{CliApp.Name}: line {index + 1}: {message}");
        if (s.Jsonl) output.WriteLine(JsonSerializer.Serialize(new { input, error = message }, Json.Options));
        else if (s.Decoding.NBest > 1 && !s.Stream) output.WriteLine($"{index} ||| ERROR ||| -inf");
        else output.WriteLine("ERROR");
    }

    private static string Score(double score) => score.ToString("F4", CultureInfo.InvariantCulture);

    /// <summary>One output line per input line, whatever the model generates.</summary>
    private static string OneLine(string text) => text.Contains('\n') || text.Contains('\r')
        ? text.Replace("\r\n", " ").Replace('\n', ' ').Replace('\r', ' ')
        : text;

    private sealed class Stats
    {
        public int Lines, Failed, Batches;
        public long Tokens;
        public TimeSpan Load;
        public readonly Stopwatch Decode = new();

        public string Describe()
        {
            var seconds = Math.Max(Decode.Elapsed.TotalSeconds, 1e-9);
            return string.Create(CultureInfo.InvariantCulture,
                $"{Lines} lines, {Lines / seconds:F1} lines/s, {Tokens / seconds:F0} tokens/s{(Failed > 0 ? $", {Failed} failed" : "")}");
        }
    }
}

/// <summary>JSON output keeps non-Latin scripts readable (no \uXXXX escapes).</summary>
internal static class Json
{
    public static readonly JsonSerializerOptions Options = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
