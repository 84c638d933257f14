using TorchSharp;
using TransformerInference.Decoding;
using TransformerInference.Loading;
using TransformerInference.Modeling;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>In-flight batching: calls arriving while others decode join the running batch, and every call gets
/// exactly what it gets alone — greedy, beam, seeded sampling and logits processors mixed; cancelling one call
/// removes only its rows.</summary>
public class InFlightBatchingTests
{
    private static Translator Seed() => Fixtures.SeedTranslator();

    private static string[] Sentences() => Fixtures.Json("seed-tiny", "expected.json").GetProperty("sentences").EnumerateArray()
        .Select(s => s.GetProperty("src").GetString()!).Where(s => s.Length > 0).Take(24).ToArray();

    /// <summary>Different searches and processors, each its own call.</summary>
    private static readonly DecodingOptions[] Mixed =
    {
        new(),
        new() { BeamSize = 3, NBest = 2 },
        new() { Sample = true, Seed = 11, TopK = 8, Temperature = 0.9 },
        new() { RepetitionPenalty = 1.3, NoRepeatNgramSize = 2 },
        new() { BeamSize = 2, LengthPenalty = 0.6, EarlyStopping = EarlyStopping.Never, MinLength = 4 },
        new() { Sample = true, Seed = 5, TopP = 0.8 },
        new() { MaxNewTokens = 5, MinNewTokens = 3 },
        new() { BeamSize = 4, EarlyStopping = EarlyStopping.Immediate, NoRepeatNgramSize = 3, NBest = 4 },
    };

    private static void AssertSame(Translation expected, Translation actual, string what)
    {
        Assert.Equal(expected.Text, actual.Text);
        Assert.Equal(expected.Hypotheses.Count, actual.Hypotheses.Count);
        for (var h = 0; h < expected.Hypotheses.Count; h++)
        {
            Assert.True(expected.Hypotheses[h].Sequence.SequenceEqual(actual.Hypotheses[h].Sequence), $"{what} hypothesis {h}");
            Assert.True(Math.Abs(expected.Hypotheses[h].Score - actual.Hypotheses[h].Score) < 1e-4, $"{what} hypothesis {h} score");
        }
    }

    [Fact]
    public async Task MixedConcurrentCallsEqualSequentialOnes()
    {
        var sentences = Sentences();
        var calls = Enumerable.Range(0, 16).Select(i => (Texts: sentences.Skip(i % 12).Take(1 + i % 3).ToArray(), Options: Mixed[i % Mixed.Length])).ToArray();
        Translation[][] sequential;
        using (var alone = Seed())
            sequential = calls.Select(c => c.Texts.Select(t => alone.TranslateDetailed(new[] { t }, c.Options)[0]).ToArray()).ToArray();

        var endless = new DecodingOptions { IgnoreEos = true }; // a leader that runs to the model's length limit
        string leaderAlone;
        using (var alone = Seed()) leaderAlone = alone.TranslateDetailed(new[] { sentences[0] }, endless)[0].Text;

        using var shared = Seed();
        // The calls start once the leader has produced its first token, so the first of them find a running batch
        // however fast the machine is; staggered starts after that: later calls arrive while earlier ones decode.
        var leader = shared.TranslateStreamAsync(sentences[0], endless).GetAsyncEnumerator();
        Assert.True(await leader.MoveNextAsync());
        var leaderText = new System.Text.StringBuilder(leader.Current);
        var tasks = calls.Select(async (c, i) =>
        {
            await Task.Delay(i % 4 * 3);
            return await shared.TranslateDetailedAsync(c.Texts, c.Options);
        }).ToArray();
        while (await leader.MoveNextAsync()) leaderText.Append(leader.Current);
        await leader.DisposeAsync();
        Assert.Equal(leaderAlone, leaderText.ToString());
        var together = await Task.WhenAll(tasks);
        for (var i = 0; i < calls.Length; i++)
            for (var j = 0; j < calls[i].Texts.Length; j++)
                AssertSame(sequential[i][j], together[i][j], $"call {i} text {j}");
        Assert.True(shared.StartedScheduler!.JoinedRunningBatches > 0, "no call joined a running batch");
    }

    [Fact]
    public async Task CancellingOneCallLeavesTheOthersIntact()
    {
        var sentences = Sentences();
        using var translator = Seed();
        var expected = sentences.Take(6).Select(t => translator.TranslateDetailed(new[] { t })[0]).ToArray();
        using var cts = new CancellationTokenSource();
        var endless = new DecodingOptions { IgnoreEos = true }; // runs to the model's length limit
        var doomed = translator.TranslateDetailedAsync(new[] { sentences[0], sentences[1] }, endless, cts.Token);
        var others = sentences.Take(6).Select(t => translator.TranslateDetailedAsync(new[] { t })).ToArray();
        await Task.Delay(5);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => doomed);
        var results = await Task.WhenAll(others);
        for (var i = 0; i < expected.Length; i++) AssertSame(expected[i], results[i][0], $"text {i}");
    }

    [Theory]
    [InlineData("serial-gqa-rmsnorm-rotary-swiglu")]
    [InlineData("serial-layernorm-learned-gelu")]
    [InlineData("parallel-mqa-rmsnorm-rotary-swiglu-tied")]
    public async Task RowsJoiningLaterKeepTheirOwnPositions(string variant)
    {
        // Rotary and learned positions, GQA and MQA: rows that join a running batch start at position 0 of their own.
        using var model = ModelLoader.Load(Fixtures.Path_("variants", variant));
        var random = new Random(3);
        var sources = Enumerable.Range(0, 6).Select(i => (IReadOnlyList<int>)Enumerable.Range(0, 3 + 2 * i)
            .Select(_ => random.Next(4, model.Config.SourceVocabSize)).ToArray()).ToArray();
        var options = new[] { new DecodingOptions { MaxNewTokens = 12, IgnoreEos = true }, new DecodingOptions { MaxNewTokens = 9, BeamSize = 2, NBest = 2 } };
        var alone = sources.Select((s, i) => Generator.Generate(model, new[] { s }, options[i % 2])[0]).ToArray();
        using var scheduler = new BatchScheduler(model);
        // Call i (i ≥ 1) is submitted from the first call's token callback at its i-th token (on the decode thread), so
        // it joins the running batch at the next step boundary: each at a different step, however fast the machine.
        var tasks = new Task<IReadOnlyList<IReadOnlyList<Hypothesis>>>[sources.Length];
        var submitted = 0;
        void OnToken(int input, int token)
        {
            var next = Interlocked.Increment(ref submitted);
            if (next < sources.Length) tasks[next] = scheduler.GenerateAsync(new[] { sources[next] }, options[next % 2]);
        }
        tasks[0] = scheduler.GenerateAsync(new[] { sources[0] }, options[0], OnToken);
        await tasks[0];
        var together = await Task.WhenAll(tasks);
        for (var i = 0; i < sources.Length; i++)
        {
            Assert.Equal(alone[i].Select(h => h.Ids), together[i][0].Select(h => h.Ids));
            Assert.Equal(alone[i].Select(h => Math.Round(h.Score, 3)), together[i][0].Select(h => Math.Round(h.Score, 3)));
        }
        Assert.Equal(sources.Length - 1, scheduler.JoinedRunningBatches);
    }

    /// <summary>Seed-tiny encoder inputs of different lengths (framed), from the fixture's sentences.</summary>
    private static IReadOnlyList<int>[] SeedSources(int count) => Fixtures.Json("seed-tiny", "expected.json").GetProperty("sentences")
        .EnumerateArray().Where(s => s.GetProperty("output_ids").ValueKind == System.Text.Json.JsonValueKind.Array)
        .Select(s => (IReadOnlyList<int>)new[] { 2 }.Concat(s.GetProperty("src_ids").Ints()).Append(3).ToArray()).Take(count).ToArray();

    [Fact]
    public async Task CallsJoiningAtTheSameStepAreEncodedTogetherAndEqualTheirLoneResults()
    {
        // Calls submitted from a token callback (on the decode thread) all join at the next step boundary: their
        // encoders run in length-sorted groups and their caches join the running one in a single merge. One call has
        // an id outside the vocabulary: it alone fails, its group is encoded again call by call.
        using var model = SeedParityTests.Load("seed-tiny");
        var sources = SeedSources(9);
        var options = new[]
        {
            new DecodingOptions(),
            new DecodingOptions { BeamSize = 3, NBest = 2 },
            new DecodingOptions { Sample = true, Seed = 7, TopK = 5 },
            new DecodingOptions { NoRepeatNgramSize = 2, MaxNewTokens = 7 },
        };
        var alone = sources.Select((s, i) => Generator.Generate(model, new[] { s }, options[i % options.Length])[0]).ToArray();
        var leader = Generator.Generate(model, new[] { sources[0] }, new DecodingOptions { MaxNewTokens = 20, IgnoreEos = true })[0];
        var bad = sources[1].Select((id, j) => j == 1 ? model.Config.SourceVocabSize + 5 : id).ToArray();

        using var scheduler = new BatchScheduler(model);
        var joiners = new TaskCompletionSource<Task<IReadOnlyList<IReadOnlyList<Hypothesis>>>[]>();
        var started = 0;
        void OnToken(int input, int token)
        {
            if (Interlocked.Exchange(ref started, 1) == 1) return;
            var tasks = sources.Select((s, i) => scheduler.GenerateAsync(new[] { s }, options[i % options.Length]))
                .Append(scheduler.GenerateAsync(new[] { (IReadOnlyList<int>)bad })).ToArray();
            joiners.SetResult(tasks);
        }
        var first = await scheduler.GenerateAsync(new[] { sources[0] }, new DecodingOptions { MaxNewTokens = 20, IgnoreEos = true }, OnToken);
        var calls = await joiners.Task;
        var failed = await Assert.ThrowsAsync<ArgumentException>(() => calls[^1]);
        Assert.Contains("ids must lie", failed.Message);
        for (var i = 0; i < sources.Length; i++)
        {
            var together = await calls[i];
            Assert.Equal(alone[i].Select(h => h.Ids), together[0].Select(h => h.Ids));
            Assert.Equal(alone[i].Select(h => h.Score), together[0].Select(h => h.Score), (a, b) => Math.Abs(a - b) < 1e-4);
        }
        Assert.Equal(leader[0].Ids, first[0][0].Ids);
        Assert.Equal(sources.Length, scheduler.JoinedRunningBatches);
    }

    [Fact]
    public void BatchedArgmaxGivesEachGreedySearchWhatItsOwnScoresGive()
    {
        // The scheduler's fast path (one argmax and log-probability per row over the whole batch) against each search
        // choosing from its own slice: the same tokens and bit-identical scores, step after step.
        using var model = SeedParityTests.Load("seed-tiny");
        var sources = SeedSources(5);
        var options = new DecodingOptions { MaxNewTokens = 6, IgnoreEos = true };
        using var own = new GreedySearch(model, sources, options, 6, null);
        using var shared = new GreedySearch(model, sources, options, 6, null);
        var random = new Random(5);
        for (var step = 0; step < 6; step++)
        {
            Assert.True(shared.TakesArgmax);
            // This search's rows sit in the middle of a larger batch.
            using var batch = torch.randn(new long[] { 3 + own.Rows + 4, model.TargetVocabSize }, generator: new torch.Generator((ulong)random.Next()));
            using var mine = batch.narrow(0, 3, own.Rows);
            own.Advance(mine);
            var (tokens, maxima) = Search.Best(batch); // what the scheduler does for the whole batch
            shared.Advance(tokens.AsSpan(3, shared.Rows), maxima.AsSpan(3, shared.Rows));
        }
        var a = own.Results();
        var b = shared.Results();
        for (var i = 0; i < sources.Length; i++)
        {
            Assert.Equal(a[i][0].Ids, b[i][0].Ids);
            Assert.Equal(a[i][0].LogProbability, b[i][0].LogProbability); // exact
        }
        // A search whose scores a processor rewrites never takes the shared argmax.
        using var processed = new GreedySearch(model, sources, new DecodingOptions { MinNewTokens = 2 }, 6, null);
        Assert.False(processed.TakesArgmax);
        Assert.Throws<InvalidOperationException>(() => processed.Advance(new long[5], new float[5]));
    }

    /// <summary>The scores of each step of <paramref name="source"/> decoded alone, fed <paramref name="feed"/>.</summary>
    private static float[][] LoneScores(TransformerModel model, IReadOnlyList<int> source, long[] feed, int steps)
    {
        using var scope = torch.NewDisposeScope();
        using var cache = model.Start(Generator.Batch(model, new[] { source }), 12);
        return feed.Take(steps).Select(t => model.Step(torch.tensor(new[] { t }, new long[] { 1, 1 }), cache).data<float>().ToArray()).ToArray();
    }

    private static float[] Row(torch.Tensor logits, int row) => logits[row].data<float>().ToArray();

    private static void Same(float[] expected, float[] actual, string what) =>
        Assert.True(expected.Zip(actual).All(p => Math.Abs(p.First - p.Second) <= 1e-4), what);

    [Fact]
    public void FilledPositionsSlideToTheFrontInsteadOfTheStoresGrowing()
    {
        // Rows that leave free the positions before the remaining rows' start (compacted away at the stores' front).
        // When a join then needs more positions than remain behind, the filled ones slide to the front in place; the
        // stores do not grow, and every row's scores still equal its sequence's decoded alone.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        var sources = SeedSources(4);
        long[] feed = [model.SosId, 17, 42, 9, 30, 5, 11, 8];
        float[][] Alone(IReadOnlyList<int> source, int steps) => LoneScores(model, source, feed, steps);
        var b = Alone(sources[1], 4);
        var c = Alone(sources[2], 5);
        var d = Alone(sources[3], 2);
        using var scope = torch.NewDisposeScope();
        var shared = model.Start(Generator.Batch(model, new[] { sources[0] }), 6);
        try
        {
            torch.Tensor Step(params long[] tokens) => model.Step(torch.tensor(tokens, new long[] { tokens.Length, 1 }), shared);
            for (var i = 0; i < 3; i++) Step(feed[i]); // a alone
            shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[1] }), 6) }); // b: the stores grow
            Assert.Equal(1, shared.Growths);
            Same(b[0], Row(Step(feed[3], feed[0]), 1), "b step 0");
            shared.Reorder(torch.tensor(new long[] { 1 })); // a leaves: its positions are compacted away
            for (var i = 1; i < 4; i++) Same(b[i], Row(Step(feed[i]), 0), $"b step {i}");
            shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[2] }), 6) }); // c: room behind
            Assert.Equal(1, shared.Growths);
            for (var i = 0; i < 3; i++)
                Same(c[i], Row(Step(feed[4 + i], feed[i]), 1), $"c step {i}");
            shared.Reorder(torch.tensor(new long[] { 1 })); // b leaves
            Same(c[3], Row(Step(feed[3]), 0), "c step 3");
            Assert.Equal(0, shared.Slides);
            shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[3] }), 6) }); // d: too few behind
            Assert.Equal(1, shared.Slides);
            Assert.Equal(1, shared.Growths);
            var logits = Step(feed[4], feed[0]);
            Same(c[4], Row(logits, 0), "c step 4");
            Same(d[0], Row(logits, 1), "d step 0");
            Same(d[1], Row(Step(feed[5], feed[1]), 1), "d step 1");
        }
        finally
        {
            shared.Dispose();
        }
    }

    [Fact]
    public void RowsLeavingFromTheFrontAreDroppedWithoutMovingTheRest()
    {
        // The oldest calls usually finish first and sit at the front: the cache rows then start further into the
        // stores instead of moving. A join fits behind them when there is room, and goes back to the front when not;
        // a reorder that is not a plain drop (beams) goes back to the front first. Scores stay each sequence's alone.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        var sources = SeedSources(7);
        long[] feed = [model.SosId, 17, 42, 9, 30, 5, 11, 8];
        var alone = sources.Select(source => LoneScores(model, source, feed, 7)).ToArray();
        using var scope = torch.NewDisposeScope();
        var shared = model.Start(Generator.Batch(model, sources.Take(4).ToArray()), 12);
        try
        {
            var rows = new List<(int Source, int Step)> { (0, 0), (1, 0), (2, 0), (3, 0) };
            void Step()
            {
                var logits = model.Step(torch.tensor(rows.Select(r => feed[r.Step]).ToArray(), new long[] { rows.Count, 1 }), shared);
                for (var i = 0; i < rows.Count; i++)
                {
                    Same(alone[rows[i].Source][rows[i].Step], Row(logits, i), $"source {rows[i].Source} step {rows[i].Step}");
                    rows[i] = (rows[i].Source, rows[i].Step + 1);
                }
            }
            void Keep(params int[] kept)
            {
                shared.Reorder(torch.tensor(kept.Select(k => (long)k).ToArray()));
                rows = kept.Select(k => rows[k]).ToList();
            }
            void Join(int source)
            {
                shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[source] }), 12) });
                rows.Add((source, 0));
            }
            Step();
            Join(4); // the stores grow to 6 rows
            Step();
            Keep(2, 3, 4); // sources 0 and 1 leave from the front
            Assert.Equal(2, shared.RowShift);
            Step();
            Join(5); // fits behind: rows 2..5 of the stores
            Assert.Equal(2, shared.RowShift);
            Assert.Equal(1, shared.Growths);
            Assert.Equal(1, shared.CrossGrowths);
            Step();
            Keep(1, 2, 3); // the front row leaves again
            Assert.Equal(3, shared.RowShift);
            Step();
            Keep(2, 0, 1); // not a plain drop: back to the front first, then gathered
            Assert.Equal(0, shared.RowShift);
            Step();
            Join(6);
            Step();
            Assert.Equal(1, shared.Growths);
        }
        finally
        {
            shared.Dispose();
        }
    }

    [Fact]
    public void JoinsLeavesSlidesAndReordersLeaveNoTensorBehind()
    {
        // Every path that replaces a cache's views or stores (growing, joining behind a row offset or at the front,
        // rows leaving from the front or the middle, a gathered reorder, positions sliding) disposes what it replaces:
        // after the cache is disposed, the thread's live tensors are what they were before it was started.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        var sources = SeedSources(6);
        var stats = DisposeScopeManager.Statistics;
        void Round()
        {
            KvCache Start(IReadOnlyList<int>[] batch)
            {
                using var ids = Generator.Batch(model, batch);
                return model.Start(ids, 6);
            }
            var cache = Start(sources.Take(3).ToArray());
            try
            {
                void Step()
                {
                    using var ids = torch.tensor(Enumerable.Repeat((long)model.SosId, (int)cache.BatchSize).ToArray(), new long[] { cache.BatchSize, 1 });
                    using var logits = model.Step(ids, cache);
                }
                void Keep(params long[] rows) { using var index = torch.tensor(rows); cache.Reorder(index); }
                void Join(int source) => cache.Merge(new[] { Start(new[] { sources[source] }) });
                Step();
                Join(3); // the stores grow
                Step();
                Keep(1, 2, 3); // a front leave: the row offset moves
                Join(4); // behind the offset, or back at the front
                Step();
                Keep(0, 2, 3); // a middle leave: rows move down
                Step();
                Keep(2, 0, 0); // a gathered reorder (beams)
                Step();
                Keep(1, 2);
                Step();
                Step();
                Join(5); // positions run out behind: slide or grow
                Step();
            }
            finally
            {
                cache.Dispose();
            }
        }
        Round(); // lazily built tensors (masks, position tables) are made once
        var before = stats.ThreadTotalLiveCount;
        Round();
        Round();
        Assert.Equal(before, stats.ThreadTotalLiveCount);
    }

    [Fact]
    public void CrossAttentionRowsLeaveAndJoinInPlace()
    {
        // Rows leaving move the kept cross-attention keys, values and source masks down inside their stores; a call
        // joining writes its rows into the rows left spare. Only a join that needs more rows or a longer source
        // reallocates them, once for all layers.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        using var scope = torch.NewDisposeScope();
        var sources = SeedSources(5).OrderByDescending(s => s.Count).ToArray();
        float[] Row(torch.Tensor t, long row) => t[row].contiguous().data<float>().ToArray();
        bool[] MaskRow(torch.Tensor t, long row) => t[row].contiguous().data<bool>().ToArray();
        using var cache = model.Start(Generator.Batch(model, sources.Take(3).ToArray()), 8);
        var layers = model.Config.DecoderLayers;
        var keys = Enumerable.Range(0, layers).Select(l => new[] { 0L, 1, 2 }.Select(r => Row(cache.Cross(l).Keys, r)).ToArray()).ToArray();
        var values = Enumerable.Range(0, layers).Select(l => new[] { 0L, 1, 2 }.Select(r => Row(cache.Cross(l).Values, r)).ToArray()).ToArray();
        var masks = new[] { 0L, 1, 2 }.Select(r => MaskRow(cache.SourceMask, r)).ToArray();

        cache.Reorder(torch.tensor(new long[] { 0, 2 })); // the middle row leaves
        Assert.Equal(2, cache.BatchSize);
        for (var l = 0; l < layers; l++)
        {
            Assert.Equal(keys[l][0], Row(cache.Cross(l).Keys, 0));
            Assert.Equal(keys[l][2], Row(cache.Cross(l).Keys, 1));
            Assert.Equal(values[l][2], Row(cache.Cross(l).Values, 1));
        }
        Assert.Equal(masks[2], MaskRow(cache.SourceMask, 1));

        // A shorter source joins into the spare row: no reallocation; its keys, values and mask padded to the width.
        using var joining = model.Start(Generator.Batch(model, new[] { sources[4] }), 8);
        var joinKeys = joining.Cross(0).Keys[0].clone();
        var joinMask = MaskRow(joining.SourceMask, 0);
        var width = cache.SourceMask.shape[3];
        var length = joinKeys.shape[1];
        Assert.True(length < width);
        cache.Merge(new[] { joining });
        Assert.Equal(0, cache.CrossGrowths);
        Assert.Equal(3, cache.BatchSize);
        Assert.Equal(width, cache.SourceMask.shape[3]);
        var joined = cache.Cross(0).Keys[2]; // [kv heads, width, head dim]
        Assert.True(joined.narrow(1, 0, length).eq(joinKeys).all().item<bool>());
        Assert.Equal(0f, joined.narrow(1, length, width - length).abs().max().item<float>());
        var mask = MaskRow(cache.SourceMask, 2);
        Assert.Equal(joinMask, mask.Take(joinMask.Length));
        Assert.All(mask.Skip(joinMask.Length), Assert.False);
        Assert.Equal(keys[0][2], Row(cache.Cross(0).Keys, 1)); // the kept rows stay

        // One more row than the stores hold: they grow once, the rows already there copied.
        cache.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[3] }), 8) });
        Assert.Equal(1, cache.CrossGrowths);
        Assert.Equal(4, cache.BatchSize);
        Assert.Equal(keys[0][0], Row(cache.Cross(0).Keys, 0));
        Assert.True(cache.Cross(0).Keys[2].narrow(1, 0, length).eq(joinKeys).all().item<bool>());
    }

    [Fact]
    public void ALongerSourceWidensTheCrossStoresWithoutAddingRows()
    {
        // A call whose source is longer than the stores' width joins into a spare row: the stores widen once and keep
        // their rows (they grew by half again before, each time, so calls with ever longer sources made them balloon).
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        using var scope = torch.NewDisposeScope();
        var sources = SeedSources(5).OrderBy(s => s.Count).ToArray();
        Assert.True(sources[^1].Count > sources[1].Count);
        using var cache = model.Start(Generator.Batch(model, sources.Take(2).ToArray()), 8);
        var kept = cache.Cross(0).Keys[1].clone();
        cache.Reorder(torch.tensor(new long[] { 1 })); // the first row leaves: one spare row
        using var longer = model.Start(Generator.Batch(model, new[] { sources[^1] }), 8);
        var longerKeys = longer.Cross(0).Keys[0].clone();
        cache.Merge(new[] { longer });
        Assert.Equal(1, cache.CrossGrowths);
        Assert.Equal(2, cache.CrossRows);
        Assert.Equal(2, cache.BatchSize);
        var width = cache.SourceMask.shape[3];
        Assert.Equal(longerKeys.shape[1], width);
        Assert.True(cache.Cross(0).Keys[1].eq(longerKeys).all().item<bool>());
        var old = cache.Cross(0).Keys[0];
        Assert.True(old.narrow(1, 0, kept.shape[1]).eq(kept).all().item<bool>());
        Assert.Equal(0f, old.narrow(1, kept.shape[1], width - kept.shape[1]).abs().max().item<float>());
    }

    [Fact]
    public void JoinsThatLackOnlyPositionsDoNotAddRows()
    {
        // A long call keeps position 0 while short calls come and go: each join needs positions past the stores' end
        // (nothing can slide back) but no more rows than the stores hold. The stores grow in positions only.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        using var scope = torch.NewDisposeScope();
        var sources = SeedSources(2);
        using var cache = model.Start(Generator.Batch(model, new[] { sources[0] }), 6);
        var growths = 0;
        for (var round = 0; round < 4; round++)
        {
            for (var step = 0; step < 6; step++)
                model.Step(torch.full(new long[] { cache.BatchSize, 1 }, model.SosId, torch.ScalarType.Int64), cache);
            if (cache.BatchSize == 2) cache.Reorder(torch.tensor(new long[] { 0 })); // the short call leaves
            var capacity = cache.Capacity;
            cache.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[1] }), 4) });
            Assert.True(cache.Capacity > capacity, $"round {round}: the join needed positions");
            Assert.Equal(++growths, cache.Growths);
            Assert.Equal(2, cache.SelfRows);
            Assert.Equal(2, cache.BatchSize);
        }
    }

    [Fact]
    public void RowsJoinSpareRowsOfTheCacheAndLeaveInPlaceWithTheirLoneLogits()
    {
        // KvCache directly: a joins, b joins (the stores grow, with rows and positions to spare), a leaves (rows move
        // in place, positions before b's start are compacted away), c joins into the spare row without a new
        // allocation. Every row's scores at every step equal the scores of its sequence decoded alone.
        using var model = SeedParityTests.Load("seed-tiny");
        using var noGrad = torch.inference_mode();
        var sources = SeedSources(3);
        long[] feed = [model.SosId, 17, 42, 9, 30, 5];
        float[][] Alone(IReadOnlyList<int> source, int steps) => LoneScores(model, source, feed, steps);
        var a = Alone(sources[0], 3);
        var b = Alone(sources[1], 4);
        var c = Alone(sources[2], 2);
        using var scope = torch.NewDisposeScope();
        var shared = model.Start(Generator.Batch(model, new[] { sources[0] }), 12);
        try
        {
            torch.Tensor Step(params long[] tokens) => model.Step(torch.tensor(tokens, new long[] { tokens.Length, 1 }), shared);

            Same(a[0], Row(Step(feed[0]), 0), "a step 0");
            shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[1] }), 12) });
            Assert.Equal(1, shared.Growths);
            var logits = Step(feed[1], feed[0]);
            Same(a[1], Row(logits, 0), "a step 1");
            Same(b[0], Row(logits, 1), "b step 0");
            logits = Step(feed[2], feed[1]);
            Same(a[2], Row(logits, 0), "a step 2");
            Same(b[1], Row(logits, 1), "b step 1");
            shared.Reorder(torch.tensor(new long[] { 1 })); // a leaves
            Assert.Equal(1, shared.RowShift); // from the front: b stays where it is
            Same(b[2], Row(Step(feed[2]), 0), "b step 2");
            shared.Merge(new[] { model.Start(Generator.Batch(model, new[] { sources[2] }), 12) });
            Assert.Equal(1, shared.Growths); // the spare row took c
            logits = Step(feed[3], feed[0]);
            Same(b[3], Row(logits, 0), "b step 3");
            Same(c[0], Row(logits, 1), "c step 0");
            logits = Step(feed[4], feed[1]);
            Same(c[1], Row(logits, 1), "c step 1");
        }
        finally
        {
            shared.Dispose();
        }
    }
}
