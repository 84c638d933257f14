using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Text.Json;
using TransformerInference.Tokenization;

namespace TransformerInference.Samples.Benchmark;

internal static partial class Modes
{
    private const string OracleFolder = "tests/TransformerInference.Tests/Fixtures/spm-oracle";

    /// <summary>SentencePiece tokenization speed: our tokenizer (NLLB framing around the model, one
    /// <c>EncodeSource</c> call per line) against python sentencepiece on the same lines, one <c>encode</c> call per
    /// line (as Hugging Face's slow tokenizers call it) and one batch call on one thread. The three are alternated
    /// within each round; medians of the rounds are reported. Python runs in one long-lived subprocess
    /// (<c>spm_baseline.py</c>) that is idle while ours runs.</summary>
    /// <returns>0, or non-zero when the baseline cannot run.</returns>
    public static int Tokenizer(Options o)
    {
        string? oracle = FindUp(OracleFolder);
        string[] models = o.Model is not null ? [o.Model]
            : oracle is not null ? [Path.Combine(oracle, "bpe16k.model"), Path.Combine(oracle, "unigram16k.model")]
            : throw new ArgumentException($"--model not given and {OracleFolder} not found above the current directory.");
        string lines = o.Lines ?? (oracle is not null ? Path.Combine(oracle, "expected.jsonl.gz")
            : throw new ArgumentException($"--lines not given and {OracleFolder} not found above the current directory."));
        string[] texts = ReadLines(lines);
        long chars = texts.Sum(t => (long)t.Length);
        Console.WriteLine($"{texts.Length} lines, {chars} characters, from {lines}; 1 thread on both sides.");
        Console.WriteLine();
        var script = Path.Combine(AppContext.BaseDirectory, "spm_baseline.py");

        var rows = new List<string[]>();
        foreach (string model in models)
        {
            string folder = NllbFolder(model);
            try
            {
                using var baseline = SentencePieceBaseline.Start(script, model, lines);
                if (baseline is null)
                {
                    Console.Error.WriteLine($"{Python} with sentencepiece is needed: sudo apt-get install -y python3-sentencepiece");
                    return 3;
                }

                SentencePieceTranslationTokenizer tokenizer = SentencePieceTranslationTokenizer.Create(folder);
                (double Seconds, long Tokens) Ours()
                {
                    var watch = Stopwatch.StartNew();
                    long tokens = 0;
                    foreach (string text in texts)
                    {
                        tokens += tokenizer.EncodeSource(text).Count - 2; // without the language token and </s>
                    }

                    return (watch.Elapsed.TotalSeconds, tokens);
                }

                var ours = new List<(double Seconds, long Tokens)>();
                var line = new List<(double Seconds, long Tokens)>();
                var batch = new List<(double Seconds, long Tokens)>();
                for (int round = -1; round < o.Runs; round++) // round -1 warms up every side
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                    var a = Ours();
                    var b = baseline.Run("line");
                    var c = baseline.Run("batch");
                    if (round >= 0)
                    {
                        ours.Add(a);
                        line.Add(b);
                        batch.Add(c);
                    }
                }

                double oursRate = MedianRate(ours);
                string name = Path.GetFileName(model);
                string[] Row(string label, List<(double Seconds, long Tokens)> runs)
                {
                    double rate = MedianRate(runs);
                    return [name, label, Table.Ms(1000 * runs.Select(r => r.Seconds).Order().ElementAt(runs.Count / 2)),
                        runs[0].Tokens.ToString(CultureInfo.InvariantCulture), (rate / 1e6).ToString("F2", CultureInfo.InvariantCulture),
                        Table.Ratio(oursRate / rate)];
                }

                rows.Add(Row("ours (`EncodeSource`, one call per line)", ours));
                rows.Add(Row("python sentencepiece, `sp.encode(line)` per line", line));
                rows.Add(Row("python sentencepiece, `sp.encode(lines, num_threads=1)`", batch));
                if (ours[0].Tokens != line[0].Tokens || line[0].Tokens != batch[0].Tokens)
                {
                    Console.WriteLine($"WARNING {name}: token counts differ (ours {ours[0].Tokens}, python {line[0].Tokens}/{batch[0].Tokens}).");
                }
            }
            finally
            {
                Directory.Delete(folder, recursive: true);
            }
        }

        Table.Print(["model", "tokenizer", "ms / pass", "tokens", "M tokens/s", "ours ÷ row (tokens/s)"], rows, textColumns: 2);
        Console.WriteLine();
        Console.WriteLine($"Median of {o.Runs} alternated rounds after one warm-up round. Tokens: SentencePiece pieces, framing tokens not counted.");
        return 0;
    }

    private static double MedianRate(List<(double Seconds, long Tokens)> runs)
        => runs.Select(r => r.Tokens / r.Seconds).Order().ElementAt(runs.Count / 2);

    private static string? FindUp(string relative)
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, relative);
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    private static string[] ReadLines(string path)
    {
        if (!path.EndsWith(".jsonl.gz", StringComparison.Ordinal))
        {
            return File.ReadAllText(path).Split('\n');
        }

        using var reader = new StreamReader(new GZipStream(File.OpenRead(path), CompressionMode.Decompress));
        var texts = new List<string>();
        while (reader.ReadLine() is string line)
        {
            using JsonDocument doc = JsonDocument.Parse(line);
            texts.Add(doc.RootElement.GetProperty("text").GetString()!);
        }

        return [.. texts];
    }

    /// <summary>A temporary NLLB folder around <paramref name="model"/> with 202 language codes: the tokenizer
    /// splits them out of the text, then adds the SentencePiece id + 1 of each piece.</summary>
    private static string NllbFolder(string model)
    {
        string folder = Directory.CreateTempSubdirectory("spm-benchmark-").FullName;
        File.Copy(model, Path.Combine(folder, "sentencepiece.bpe.model"));
        const int Language = 10_000_000; // above any piece id
        var config = new Dictionary<string, object>
        {
            ["tokenizer_class"] = "NllbTokenizer",
            ["src_lang"] = "eng_Latn",
            ["added_tokens_decoder"] = new Dictionary<string, object>
            {
                ["0"] = new { content = "<s>", special = true },
                ["1"] = new { content = "<pad>", special = true },
                ["2"] = new { content = "</s>", special = true },
                ["3"] = new { content = "<unk>", special = true },
                [Language.ToString(CultureInfo.InvariantCulture)] = new { content = "eng_Latn", special = true },
            },
        };
        // Like a real NLLB folder, 202 language codes that the tokenizer looks for in the text.
        var decoder = (Dictionary<string, object>)config["added_tokens_decoder"];
        for (int i = 1; i < 202; i++)
        {
            decoder[(Language + i).ToString(CultureInfo.InvariantCulture)] = new { content = $"l{i:D2}_Xxxx", special = true };
        }

        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), JsonSerializer.Serialize(config));
        return folder;
    }

    /// <summary>The long-lived <c>spm_baseline.py</c> process.</summary>
    private sealed class SentencePieceBaseline : IDisposable
    {
        private readonly Process _process;

        private SentencePieceBaseline(Process process) => _process = process;

        /// <summary>Starts the baseline; null when Python or its sentencepiece module is missing.</summary>
        public static SentencePieceBaseline? Start(string script, string model, string lines)
        {
            var info = new ProcessStartInfo(Python)
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = false,
                UseShellExecute = false,
            };
            info.ArgumentList.Add(script);
            info.ArgumentList.Add(model);
            info.ArgumentList.Add(lines);
            Process process;
            try
            {
                process = Process.Start(info) ?? throw new InvalidOperationException($"Could not start {Python}.");
            }
            catch (Win32Exception)
            {
                return null;
            }

            if (process.StandardOutput.ReadLine() != "ready")
            {
                process.WaitForExit();
                process.Dispose();
                return null;
            }

            return new SentencePieceBaseline(process);
        }

        public (double Seconds, long Tokens) Run(string command)
        {
            _process.StandardInput.WriteLine(command);
            _process.StandardInput.Flush();
            string reply = _process.StandardOutput.ReadLine() ?? throw new InvalidOperationException("spm_baseline.py stopped.");
            using JsonDocument doc = JsonDocument.Parse(reply);
            return (doc.RootElement.GetProperty("seconds").GetDouble(), doc.RootElement.GetProperty("tokens").GetInt64());
        }

        public void Dispose()
        {
            _process.StandardInput.Close();
            _process.WaitForExit();
            _process.Dispose();
        }
    }
}
