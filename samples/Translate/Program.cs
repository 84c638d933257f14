// The shortest useful program on TransformerInference: English→Nepali with the bundled demo model.
//   dotnet run --project samples/Translate                      → म तपाईंलाई एकदम धेरै माया गर्छु
//   dotnet run --project samples/Translate -- "we help them ."  → the arguments, one line each
//   echo "we help them ." | dotnet run --project samples/Translate   → stdin, one line per line
// Every model, flag and output format: the transformer-inference tool (src/TransformerInference.Cli).
using System.Text;
using TransformerInference;

Console.OutputEncoding = new UTF8Encoding(false);
var demo = Path.Combine(AppContext.BaseDirectory, "DemoModel");
using var translator = Translator.Load(Path.Combine(demo, "tmodel.pt"),
    Path.Combine(demo, "tokenizer_en.json"), Path.Combine(demo, "tokenizer_ne.json")); // heads: model_args.json beside it

var inputs = args.Length > 0 ? args : Console.IsInputRedirected ? StdinLines().ToArray() : [];
if (inputs.Length == 0) inputs = ["I love you so much"]; // nothing given (or empty stdin): the demo sentence

foreach (var batch in inputs.Chunk(32)) // a batch is decoded together: faster than one call per line
{
    foreach (var translation in translator.Translate(batch))
        Console.WriteLine(translation);
}

static IEnumerable<string> StdinLines()
{
    Console.InputEncoding = new UTF8Encoding(false);
    while (Console.ReadLine() is { } line) yield return line;
}
