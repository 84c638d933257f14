using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.ML.Tokenizers;
using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using TransformerInference.Tokenization;

namespace TransformerInference;

/// <summary>
/// Text in, translation out: tokenises, encodes once, decodes with a KV cache (greedy, beam or sampling), detokenises.
/// Thread-safe: concurrent calls share the running batch (a <see cref="BatchScheduler"/>: a call arriving while others
/// decode joins them at the next step, with results exactly as if it ran alone). Dispose to free the model's memory.
/// </summary>
/// <example>
/// <code>
/// using var translator = Translator.Load("tmodel.pt", "tokenizer_en.json", "tokenizer_ne.json");
/// Console.WriteLine(translator.Translate("I love you so much"));
/// </code>
/// </example>
public sealed class Translator : IDisposable, IAsyncDisposable
{
    private readonly ITranslationTokenizer _tokenizer; // frames the input, names the forced first token, decodes
    private readonly TranslatorOptions _options;
    private readonly DecodingOptions _decoding; // used when a call passes none
    private readonly DecodingOptions _familyRules; // start, forced and banned tokens, length: filled into every call's options
    private readonly bool _ownsModel;
    private readonly Lazy<BatchScheduler> _scheduler; // the decode loop all calls share; started by the first call
    private readonly object _lifetime = new();
    private bool _disposed;

    private Translator(TransformerModel model, ITranslationTokenizer tokenizer, TranslatorOptions options, bool ownsModel,
        DecodingOptions? familyDefaults = null)
    {
        Model = model;
        _tokenizer = tokenizer;
        _scheduler = new Lazy<BatchScheduler>(() => new BatchScheduler(model, options.MaxBatchSize, options.MaxBatchTokens)
        {
            QueueChanged = change => TranslatorDiagnostics.Queued(Name, change),
        });
        _options = options;
        _ownsModel = ownsModel;
        options.Validate();
        CheckVocabularies(model, tokenizer);
        if (options.Threads is { } threads) torch.set_num_threads(threads);
        _familyRules = familyDefaults ?? new DecodingOptions();
        // The target language is the forced first token: the option, else an explicit id, else the tokenizer's default.
        var forcedFirst = options.TargetLanguage is { } language ? tokenizer.TargetLanguageToken(language)
            : options.Decoding?.ForcedBosTokenId ?? _familyRules.ForcedBosTokenId ?? tokenizer.TargetLanguageToken(null);
        if (forcedFirst is not null) _familyRules = _familyRules with { ForcedBosTokenId = forcedFirst };
        _decoding = WithFamilyRules(options.Decoding ?? familyDefaults ?? new DecodingOptions()).Validate();
        tokenizer.EncodeSource("", options.SourceLanguage); // fail early on an unknown source language
    }

    /// <summary>A tokenizer with more ids than the model's embeddings has the wrong files (for example source and target
    /// swapped): refuse it at load instead of failing on the first unknown word.</summary>
    private static void CheckVocabularies(TransformerModel model, ITranslationTokenizer tokenizer)
    {
        if (tokenizer.SourceVocabularySize > model.Config.SourceVocabSize)
            throw new InvalidDataException(
                $"The source tokenizer has {tokenizer.SourceVocabularySize} ids but the model's source embedding has {model.Config.SourceVocabSize} rows: the tokenizer does not belong to this model (source and target swapped?).");
        if (tokenizer.TargetVocabularySize > model.Config.TargetVocabSize)
            throw new InvalidDataException(
                $"The target tokenizer has {tokenizer.TargetVocabularySize} ids but the model's target embedding has {model.Config.TargetVocabSize} rows: the tokenizer does not belong to this model (source and target swapped?).");
    }

    /// <summary>The name in metrics and traces (<see cref="TranslatorOptions.Name"/>).</summary>
    public string Name => _options.Name;

    /// <summary>The model (for id-level use with <see cref="Generator"/>).</summary>
    public TransformerModel Model { get; }

    /// <summary>
    /// Loads a seed checkpoint (<c>torch.save</c> file, either naming scheme) or a model folder, and the source and
    /// target Hugging Face WordLevel <c>tokenizer.json</c> files. Special ids come from the target tokenizer.
    /// </summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="CheckpointException">The checkpoint cannot be used.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is corrupt.</exception>
    public static Translator Load(string modelPath, string sourceTokenizerPath, string targetTokenizerPath, TranslatorOptions? options = null)
    {
        options = (options ?? new TranslatorOptions()).Validate();
        var source = WordLevelTokenizer.Create(sourceTokenizerPath);
        var target = WordLevelTokenizer.Create(targetTokenizerPath);
        int Special(string token) => target.TokenToId(token)
            ?? throw new InvalidDataException($"The target tokenizer '{targetTokenizerPath}' has no {token} token.");
        var ids = new SpecialTokenIds(Special("[UNK]"), Special("[PAD]"), Special("[SOS]"), Special("[EOS]"));
        var model = ModelLoader.Load(modelPath, options.ToLoadOptions(ids));
        try
        {
            return new Translator(model, new SeedTokenizerPair(source, target, model.SosId, model.EosId, model.PadId), options, ownsModel: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Loads like <see cref="Load(string, string, string, TranslatorOptions?)"/> on a worker thread (reading and converting the weights takes a while
    /// for large models).</summary>
    public static Task<Translator> LoadAsync(string modelPath, string sourceTokenizerPath, string targetTokenizerPath,
        TranslatorOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.Run(() => Load(modelPath, sourceTokenizerPath, targetTokenizerPath, options), cancellationToken);

    /// <summary>
    /// Loads a Hugging Face translation folder — Marian (<c>opus-mt-*</c>), M2M100, NLLB, mBART-50, T5 / Flan-T5 /
    /// mT5: <c>config.json</c>, the weights, <c>generation_config.json</c> (the default search: Marian's is beam 4) and
    /// the SentencePiece tokenizer files, all from <paramref name="folder"/>. Set the languages of multilingual models
    /// in <paramref name="options"/>; T5 inputs carry their task prefix as text.
    /// </summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="CheckpointException">The weights or config cannot be used.</exception>
    /// <exception cref="ArgumentException">A language the tokenizer does not know.</exception>
    public static Translator Load(string folder, TranslatorOptions? options = null)
    {
        options = (options ?? new TranslatorOptions()).Validate();
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"The model folder '{folder}' does not exist.");
        var tokenizer = ModelLoader.LoadTokenizer(folder);
        var model = ModelLoader.LoadFolder(folder, options.ToLoadOptions(new SpecialTokenIds()));
        try
        {
            return new Translator(model, tokenizer, options, ownsModel: true, ModelLoader.LoadGenerationDefaults(folder));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Loads a Hugging Face folder like <see cref="Load(string, TranslatorOptions?)"/> on a worker thread.</summary>
    public static Task<Translator> LoadAsync(string folder, TranslatorOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.Run(() => Load(folder, options), cancellationToken);

    /// <summary>Builds a translator for a seed model from its two tokenizers (input framed as <c>[SOS] ids [EOS]</c>).
    /// The model is not disposed with the translator.</summary>
    /// <exception cref="ObjectDisposedException"><paramref name="model"/> has been disposed.</exception>
    public static Translator Create(TransformerModel model, Tokenizer sourceTokenizer, Tokenizer targetTokenizer, TranslatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sourceTokenizer);
        ArgumentNullException.ThrowIfNull(targetTokenizer);
        model.ThrowIfDisposed();
        return new(model, new SeedTokenizerPair(sourceTokenizer, targetTokenizer, model.SosId, model.EosId, model.PadId), options ?? new TranslatorOptions(), ownsModel: false);
    }

    /// <summary>Builds a translator from a model and a tokenizer that frames its own inputs (such as a
    /// <see cref="SentencePieceTranslationTokenizer"/>). The model is not disposed with the translator.</summary>
    /// <exception cref="ObjectDisposedException"><paramref name="model"/> has been disposed.</exception>
    public static Translator Create(TransformerModel model, ITranslationTokenizer tokenizer, TranslatorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        model.ThrowIfDisposed();
        return new(model, tokenizer, options ?? new TranslatorOptions(), ownsModel: false);
    }

    /// <summary>Translates one text. Empty input (no tokens) gives empty output.</summary>
    /// <exception cref="ArgumentException">The text has more tokens than the model accepts (and truncation is off).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before every step).</exception>
    public string Translate(string text, DecodingOptions? decoding = null, CancellationToken cancellationToken = default) =>
        TranslateDetailed(new[] { text }, decoding, cancellationToken)[0].Text;

    /// <summary>Translates texts in batches; results are in input order and do not depend on the batching.</summary>
    public IReadOnlyList<string> Translate(IReadOnlyList<string> texts, DecodingOptions? decoding = null, CancellationToken cancellationToken = default) =>
        TranslateDetailed(texts, decoding, cancellationToken).Select(t => t.Text).ToArray();

    /// <summary>Translates texts, returning ids, scores and (with beam search) the n-best hypotheses.</summary>
    public IReadOnlyList<Translation> TranslateDetailed(IReadOnlyList<string> texts, DecodingOptions? decoding = null, CancellationToken cancellationToken = default) =>
        TranslateDetailedAsync(texts, decoding, cancellationToken).GetAwaiter().GetResult();

    /// <summary>Translates texts like <see cref="TranslateDetailed"/>; the caller waits without holding a thread
    /// while the shared decode loop works.</summary>
    public async Task<IReadOnlyList<Translation>> TranslateDetailedAsync(IReadOnlyList<string> texts, DecodingOptions? decoding = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        var options = WithFamilyRules(decoding);
        var start = Generator.StartId(Model, options);
        using var telemetry = TranslatorDiagnostics.Begin(Name, texts.Count, options);
        var hypotheses = new IReadOnlyList<Hypothesis>[texts.Count];
        int[]?[] sources;
        try
        {
            sources = texts.Select(Frame).ToArray();
            var scheduler = Scheduler();
            // Every batch is submitted at once; the scheduler decodes them together as its limits allow.
            var batches = Batches(sources).Select(async batch =>
            {
                var inputs = batch.Select(i => (IReadOnlyList<int>)sources[i]!).ToArray();
                var results = await telemetry.BatchAsync(inputs, onToken => scheduler.GenerateAsync(inputs, options, onToken, cancellationToken))
                    .ConfigureAwait(false);
                for (var j = 0; j < batch.Count; j++) hypotheses[batch[j]] = results[j];
            }).ToArray();
            await Task.WhenAll(batches).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            telemetry.Fail(e);
            throw;
        }
        return Enumerable.Range(0, texts.Count).Select(i =>
        {
            if (sources[i] is null) return new Translation("", Array.Empty<int>(), Array.Empty<TranslationHypothesis>());
            var all = hypotheses[i].Select(h => new TranslationHypothesis(_tokenizer.Decode(h.Ids), h,
                [start, .. h.Ids, .. h.Finished ? new[] { Model.EosId } : Array.Empty<int>()])).ToArray();
            return new Translation(all[0].Text, all[0].Hypothesis.Ids, all);
        }).ToArray();
    }

    /// <summary>Translates texts in batches, waiting without holding a thread (see <see cref="Translate(IReadOnlyList{string}, DecodingOptions?, CancellationToken)"/>).</summary>
    public async Task<IReadOnlyList<string>> TranslateAsync(IReadOnlyList<string> texts, DecodingOptions? decoding = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(texts);
        return (await TranslateDetailedAsync(texts, decoding, cancellationToken).ConfigureAwait(false)).Select(t => t.Text).ToArray();
    }

    /// <summary>Translates one text, waiting without holding a thread.</summary>
    public async Task<string> TranslateAsync(string text, DecodingOptions? decoding = null, CancellationToken cancellationToken = default) =>
        (await TranslateDetailedAsync(new[] { text }, decoding, cancellationToken).ConfigureAwait(false))[0].Text;

    /// <summary>The shared decode loop if a call started it (tests look at how calls shared it).</summary>
    internal BatchScheduler? StartedScheduler => _scheduler.IsValueCreated ? _scheduler.Value : null;

    /// <summary>The shared decode loop (started on first use).</summary>
    private BatchScheduler Scheduler()
    {
        lock (_lifetime)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _scheduler.Value;
        }
    }

    /// <summary>
    /// Yields the translation piece by piece as its tokens are produced — the pieces joined give the text
    /// <see cref="Translate(string, DecodingOptions?, CancellationToken)"/> returns (greedy or sampling; beam search yields its
    /// best hypothesis once it is complete). Cancelling stops decoding at the next step and frees its tensors.
    /// </summary>
    public async IAsyncEnumerable<string> TranslateStreamAsync(string text, DecodingOptions? decoding = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var options = WithFamilyRules(decoding);
        using var telemetry = TranslatorDiagnostics.Begin(Name, 1, options);
        int[]? source;
        try
        {
            source = Frame(text);
        }
        catch (Exception e)
        {
            telemetry.Fail(e);
            throw;
        }
        if (source is null) yield break;
        var channel = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // The search runs in the shared decode loop; its tokens arrive through the channel.
        var scheduler = Scheduler();
        var worker = Task.Run(async () =>
        {
            try
            {
                var result = await telemetry.BatchAsync(new[] { source }, onToken => scheduler.GenerateAsync(new[] { source }, options,
                    options.BeamSize == 1 ? onToken : null, linked.Token), (_, token) => channel.Writer.TryWrite(token)).ConfigureAwait(false);
                if (options.BeamSize > 1) foreach (var token in result[0][0].Ids) channel.Writer.TryWrite(token);
                channel.Writer.Complete();
            }
            catch (Exception e)
            {
                // A consumer that stopped reading (cancelled or done early) is not a failure of the translation.
                if (!(e is OperationCanceledException && linked.IsCancellationRequested && !cancellationToken.IsCancellationRequested)) telemetry.Fail(e);
                channel.Writer.Complete(e);
            }
        }, CancellationToken.None);
        try
        {
            // Decode the growing prefix and yield what it adds, so joining the pieces gives exactly the translation
            // (detokenisers join and clean up across tokens). Trailing white space waits for the next piece.
            var ids = new List<int>();
            var sent = "";
            await foreach (var token in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                // Buffered tokens are read without waiting, so check for cancellation on each one.
                cancellationToken.ThrowIfCancellationRequested();
                ids.Add(token);
                var piece = NewText(_tokenizer.Decode(ids).TrimEnd(), ref sent);
                if (piece.Length > 0) yield return piece;
            }
            var rest = NewText(_tokenizer.Decode(ids), ref sent);
            if (rest.Length > 0) yield return rest;
        }
        finally
        {
            linked.Cancel();
            await worker.ConfigureAwait(false);
        }
    }

    /// <summary>The part of <paramref name="text"/> after what was already sent (nothing if the text no longer starts
    /// with it: a later token changed earlier text, which streaming cannot take back).</summary>
    private static string NewText(string text, ref string sent)
    {
        if (text.Length <= sent.Length || !text.StartsWith(sent, StringComparison.Ordinal)) return "";
        var piece = text[sent.Length..];
        sent = text;
        return piece;
    }

    /// <summary>A call's options, or the translator's; the family's rules (start token, forced first and last
    /// tokens such as the target language, banned tokens) fill in what a call leaves unset.</summary>
    private DecodingOptions WithFamilyRules(DecodingOptions? decoding) => decoding?.WithRulesFrom(_familyRules) ?? _decoding;

    /// <summary>Encoder input as the tokenizer frames it, or null for a text without tokens.</summary>
    private int[]? Frame(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (string.IsNullOrWhiteSpace(text)) return null;
        var encoded = _tokenizer.EncodeSource(text, _options.SourceLanguage).ToArray();
        if (encoded.Length == 0) return null;
        if (encoded.Length <= Model.MaxSourceLength) return encoded;
        // The framing (language codes, start and end tokens) stays at both ends; the text between them is cut.
        var lead = encoded.TakeWhile(_tokenizer.IsSpecialToken).Count();
        var tail = encoded.Reverse().TakeWhile(_tokenizer.IsSpecialToken).Count();
        if (!_options.Truncate)
            throw new ArgumentException(
                $"The input has {encoded.Length - lead - tail} tokens; the model accepts at most {Model.MaxSourceLength - lead - tail} "
                + $"(source length {Model.MaxSourceLength} minus {lead + tail} framing tokens). Input starts: \"{Preview(text)}\".",
                nameof(text));
        var body = Math.Max(Model.MaxSourceLength - lead - tail, 0);
        TranslatorDiagnostics.Truncated(_options.Logger, Name, encoded.Length, Model.MaxSourceLength);
        return encoded[..(lead + body)].Concat(encoded[^tail..]).ToArray();
    }

    private static string Preview(string text) => text.Length <= 40 ? text : text[..40] + "…";

    /// <summary>Groups inputs of similar length (longest first) under the sentence and padded-token limits; an input
    /// longer than the token limit gets a batch of its own.</summary>
    private List<List<int>> Batches(int[]?[] sources)
    {
        var order = Enumerable.Range(0, sources.Length).Where(i => sources[i] is not null)
            .OrderByDescending(i => sources[i]!.Length).ToList();
        var batches = new List<List<int>>();
        var current = new List<int>();
        var width = 0;
        foreach (var i in order)
        {
            var w = Math.Max(width, sources[i]!.Length);
            if (current.Count > 0 && (current.Count + 1 > _options.MaxBatchSize || (current.Count + 1) * w > _options.MaxBatchTokens))
            {
                batches.Add(current);
                current = new List<int>();
                w = sources[i]!.Length;
            }
            current.Add(i);
            width = w;
        }
        if (current.Count > 0) batches.Add(current);
        return batches;
    }

    /// <summary>Stops the decode loop (calls still running fail with <see cref="ObjectDisposedException"/>) and frees
    /// the model (when the translator loaded it).</summary>
    public void Dispose()
    {
        lock (_lifetime)
        {
            if (_disposed) return;
            _disposed = true;
        }
        if (_scheduler.IsValueCreated) _scheduler.Value.Dispose();
        if (_ownsModel) Model.Dispose();
    }

    /// <summary>Disposes like <see cref="Dispose"/> on a worker thread (stopping the decode loop waits for its current step).</summary>
    public async ValueTask DisposeAsync() => await Task.Run(Dispose).ConfigureAwait(false);
}
