using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TorchSharp;

namespace TransformerInference.Cli;

/// <summary><c>transformer-inference inspect PATH</c>: what a model folder or checkpoint holds.</summary>
internal static class InspectCommand
{
    private static readonly Argument<string> Path = new("PATH") { Description = "A model folder or a seed checkpoint" };
    private static readonly Option<int?> Heads = new("--heads") { Description = "Attention heads of a seed checkpoint [default: h of model_args.json beside it, else 8]", HelpName = "N" };
    private static readonly Option<string> Format = new("--format") { Description = "text or json", HelpName = "FORMAT", DefaultValueFactory = _ => "text" };

    public static Command Create(Io io)
    {
        var command = new Command("inspect", "Show a model's family, sizes, parameter count, dtype, special ids and languages.") { Path, Heads, Format };
        Format.AcceptOnlyFromAmong("text", "json");
        command.SetAction(parse => Run(parse.GetValue(Path)!, parse.GetValue(Heads), parse.GetValue(Format) == "json", io));
        return command;
    }

    private static int Run(string path, int? heads, bool json, Io io)
    {
        if (heads is < 1) throw new UsageException($"--heads must be at least 1, got {heads}");
        var folder = Directory.Exists(path);
        if (!folder && !File.Exists(path)) throw new FileNotFoundException($"No such file or folder: '{path}'.", path);
        var family = folder ? Family.Read(path) : null;
        if (heads is not null && family is not null && family.ModelType != "seed_transformer")
            throw new UsageException("--heads is not used: the folder's config.json gives the head count");
        TransformerModel model;
        try
        {
            model = ModelLoader.Load(path, new ModelLoadOptions { Heads = heads });
        }
        catch (ArgumentException e)
        {
            throw new UsageException(Flags.Rewrite(e));
        }
        using var _ = model;
        var c = model.Config;
        var info = new List<(string Key, object? Value)>
        {
            ("path", path),
            ("family", family is null ? "seed checkpoint (pytorch-transformer)" : family.Name),
            ("model_type", family?.ModelType),
            ("parameters", model.ParameterCount),
            ("dtype", model.DType.ToString().ToLowerInvariant()),
            ("d_model", c.DModel),
            ("d_ff", c.DFF),
            ("encoder_layers", c.EncoderLayers),
            ("decoder_layers", c.DecoderLayers),
            ("heads", c.Heads),
            ("kv_heads", c.EffectiveKvHeads),
            ("source_vocab", c.SourceVocabSize),
            ("target_vocab", c.TargetVocabSize),
            ("max_source_positions", c.MaxSourcePositions),
            ("max_target_positions", c.MaxTargetPositions),
            ("norm", $"{c.Norm} {c.NormPlacement}".ToLowerInvariant()),
            ("positions", c.Positions.ToString().ToLowerInvariant()),
            ("feed_forward", c.FeedForward.ToString().ToLowerInvariant()),
            ("pad_id", c.PadId),
            ("start_id", family?.GenerationDefaults?.DecoderStartTokenId ?? c.SosId),
            ("eos_id", c.EosId),
            ("unk_id", c.UnkId),
            ("languages", family?.Languages is { } l ? l : null),
            ("default_beam", family?.GenerationDefaults?.BeamSize),
            ("default_max_length", family?.GenerationDefaults?.MaxLength),
        };
        if (json)
        {
            var record = info.Where(kv => kv.Value is not null).ToDictionary(kv => kv.Key, kv => kv.Value);
            io.Stdout.WriteLine(JsonSerializer.Serialize(record, Json.Options));
        }
        else
        {
            foreach (var (key, value) in info.Where(kv => kv.Value is not null))
                io.Stdout.WriteLine($"{key,-21} {Text(value!)}");
        }
        return ExitCodes.Success;
    }

    private static string Text(object value) => value switch
    {
        IReadOnlyList<string> list => $"{list.Count}: {string.Join(' ', list)}",
        long n => n.ToString("N0", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
