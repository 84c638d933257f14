// A consumer of the TransformerInference package: translates with the seed demo model whose folder is the argument.
using System.Text;
using TransformerInference;

Console.OutputEncoding = new UTF8Encoding(false);
var demo = args.Length > 0 ? args[0] : throw new ArgumentException("usage: consumer DEMO_MODEL_FOLDER");
await using var translator = await Translator.LoadAsync(Path.Combine(demo, "tmodel.pt"),
    Path.Combine(demo, "tokenizer_en.json"), Path.Combine(demo, "tokenizer_ne.json")); // heads from model_args.json
var texts = await translator.TranslateAsync(new[] { "I love you so much" });
var best = translator.TranslateDetailed(texts.Count == 1 ? new[] { "I love you so much" } : Array.Empty<string>())[0];
if (best.Text != texts[0] || !(best.Score < 0)) throw new InvalidOperationException($"inconsistent result: {best}");
Console.WriteLine(texts[0]);
