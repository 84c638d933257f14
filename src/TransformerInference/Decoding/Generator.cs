using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// Search over an <see cref="ISeq2SeqModel"/>: greedy, sampling and beam search with a KV cache. The encoder runs
/// once per batch; each step feeds only the newest token of every live sequence. Knows nothing of layers.
/// </summary>
public static class Generator
{
    /// <summary>
    /// Generates target sequences for a batch of encoder inputs (each already framed as the model expects, e.g.
    /// <c>[SOS] ids [EOS]</c>). The batch is decoded together: finished sequences (greedy, sampling) or inputs whose
    /// beam search is over leave it. Results come back in input order.
    /// </summary>
    /// <param name="model">The model.</param>
    /// <param name="sources">Encoder input ids per sequence.</param>
    /// <param name="options">Search options (default greedy).</param>
    /// <param name="onToken">Called with (input index, token id) for each token as it is chosen (greedy and sampling; not for <c>[EOS]</c>).</param>
    /// <param name="cancellationToken">Checked before every step.</param>
    /// <returns>Per input, its hypotheses best first (<see cref="DecodingOptions.NBest"/> of them for beams, one otherwise).</returns>
    public static IReadOnlyList<IReadOnlyList<Hypothesis>> Generate(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources,
        DecodingOptions? options = null, Action<int, int>? onToken = null, CancellationToken cancellationToken = default)
    {
        (options, var maxNew) = Prepare(model, sources, options);
        if (sources.Count == 0) return Array.Empty<IReadOnlyList<Hypothesis>>();
        using var noGrad = inference_mode();
        using var search = Search.Create(model, sources, options, maxNew, onToken);
        return Run(model, sources, search, cancellationToken);
    }

    /// <summary>Checks a call (options, ids, lengths) before anything is allocated for it and returns its options as
    /// the search uses them and the most tokens it generates per sequence.</summary>
    /// <exception cref="ArgumentException">An option or input is unusable; the message names it.</exception>
    internal static (DecodingOptions Options, int MaxNew) Prepare(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources, DecodingOptions? options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(sources);
        options = (options ?? new DecodingOptions()).ValidateFor(model);
        // Fixed-length runs: a forced end token would end (or pollute) them.
        if (options.IgnoreEos && options.ForcedEosTokenId is not null) options = options with { ForcedEosTokenId = null };
        var maxNew = options.MaxNewTokens ?? (options.MaxLength is { } maxLength
            ? Math.Min(maxLength - 1, model.MaxTargetLength)
            : Math.Min(model.MaxTargetLength - 1, DecodingOptions.DefaultMaxNewTokens));
        for (var i = 0; i < sources.Count; i++)
        {
            var s = sources[i] ?? throw new ArgumentNullException(nameof(sources), $"Encoder input {i} is null.");
            if (s.Count == 0) throw new ArgumentException("An encoder input is empty; frame it with the start/end tokens.", nameof(sources));
            if (s.Count > model.MaxSourceLength)
                throw new ArgumentException($"An encoder input has {s.Count} positions; the model accepts at most {model.MaxSourceLength}.", nameof(sources));
        }
        return (options, maxNew);
    }

    /// <summary>Drives one search to its end: the encoder once, then one decoder step per token, the cache rows
    /// following the rows the search keeps.</summary>
    internal static IReadOnlyList<IReadOnlyList<Hypothesis>> Run(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources,
        Search search, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        KvCache cache;
        using (var src = Batch(model, sources)) cache = model.Start(src, search.MaxNew);
        using var _ = cache;
        if (!IsIdentity(search.InitialRows, sources.Count))
        {
            using var expand = tensor(search.InitialRows.Select(i => (long)i).ToArray());
            cache.Reorder(expand);
        }
        var feed = new List<long>();
        while (search.Rows > 0)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var rows = search.Rows;
            feed.Clear();
            search.Feed(feed);
            var logits = model.Step(tensor(feed.ToArray(), new long[] { rows, 1 }), cache);
            var keep = search.Advance(logits);
            if (keep.Count > 0 && !IsIdentity(keep, rows))
            {
                using var order = tensor(keep.Select(i => (long)i).ToArray());
                cache.Reorder(order);
            }
        }
        return search.Results();
    }

    /// <summary>Whether <paramref name="rows"/> is 0, 1, …, <paramref name="count"/> − 1 (no reorder needed).</summary>
    internal static bool IsIdentity(IReadOnlyList<int> rows, long count)
    {
        if (rows.Count != count) return false;
        for (var i = 0; i < rows.Count; i++)
            if (rows[i] != i) return false;
        return true;
    }

    /// <summary>The first decoder input: <see cref="DecodingOptions.DecoderStartTokenId"/> or the model's start id.</summary>
    internal static int StartId(ISeq2SeqModel model, DecodingOptions o) => o.DecoderStartTokenId ?? model.SosId;

    /// <summary>A right-padded int64 batch <c>[B, S]</c> on the model's device.</summary>
    internal static Tensor Batch(ISeq2SeqModel model, IReadOnlyList<IReadOnlyList<int>> sources)
    {
        var width = sources.Max(s => s.Count);
        var data = new long[sources.Count * width];
        Array.Fill(data, model.PadId);
        for (var i = 0; i < sources.Count; i++)
            for (var j = 0; j < sources[i].Count; j++) data[i * width + j] = sources[i][j];
        using var host = tensor(data, new long[] { sources.Count, width });
        return host.to(model.Device);
    }
}
