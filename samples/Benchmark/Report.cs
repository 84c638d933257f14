using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace TransformerInference.Samples.Benchmark;

/// <summary>Everything a mode printed, kept for <c>--json FILE</c>: each table as a list of objects keyed by its
/// header, plus named figures a mode adds (<see cref="Figures"/>).</summary>
internal static class Report
{
    public static List<(IReadOnlyList<string> Header, List<string[]> Rows)> Tables { get; } = new();

    /// <summary>Numbers a mode measured that are not in a table cell as such (bandwidth, peaks, raw medians).</summary>
    public static Dictionary<string, double> Figures { get; } = new();

    public static void Write(string path, string[] args, Options o)
    {
        var tables = new JsonArray();
        foreach (var (header, rows) in Tables)
        {
            var list = new JsonArray();
            foreach (var row in rows)
            {
                var item = new JsonObject();
                for (var i = 0; i < header.Count && i < row.Length; i++) item[header[i]] = row[i];
                list.Add(item);
            }
            tables.Add(list);
        }
        var figures = new JsonObject();
        foreach (var (name, value) in Figures) figures[name] = value;
        var root = new JsonObject
        {
            ["command"] = "dotnet run -c Release --project samples/Benchmark -- " + string.Join(' ', args),
            ["utc"] = DateTime.UtcNow.ToString("O"),
            ["mode"] = o.Mode,
            ["threads"] = get_num_threads(),
            ["runs"] = o.Runs,
            ["logicalCpus"] = Environment.ProcessorCount,
            ["figures"] = figures,
            ["tables"] = tables,
        };
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine();
        Console.WriteLine($"Results written to {path}.");
    }
}
