using System.Text.RegularExpressions;

namespace TransformerInference.Cli;

/// <summary>Library messages name API members (<c>BeamSize</c>, <c>(Parameter 'NBest')</c>); the user typed flags.</summary>
internal static partial class Flags
{
    /// <summary>API member → the flag that sets it.</summary>
    public static readonly IReadOnlyDictionary<string, string> ByMember = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        ["MaxNewTokens"] = "--max-new-tokens",
        ["MaxLength"] = "--max-length",
        ["MinNewTokens"] = "--min-new-tokens",
        ["MinLength"] = "--min-length",
        ["BeamSize"] = "--beam",
        ["NBest"] = "--n-best",
        ["LengthPenalty"] = "--length-penalty",
        ["EarlyStopping"] = "--early-stopping",
        ["Sample"] = "--sample",
        ["Temperature"] = "--temperature",
        ["TopK"] = "--top-k",
        ["TopP"] = "--top-p",
        ["Seed"] = "--seed",
        ["RepetitionPenalty"] = "--repetition-penalty",
        ["NoRepeatNgramSize"] = "--no-repeat-ngram",
        ["IgnoreEos"] = "--ignore-eos",
        ["Heads"] = "--heads",
        ["MaxBatchSize"] = "--batch-size",
        ["Threads"] = "--threads",
        ["DType"] = "--dtype",
        ["Device"] = "--device",
        ["SourceLanguage"] = "--src-lang",
        ["TargetLanguage"] = "--tgt-lang",
    };

    /// <summary>Drops <c>(Parameter '…')</c> and replaces API member names by their flags: qualified ones
    /// (<c>TranslatorOptions.TargetLanguage</c>) anywhere, plain ones (<c>BeamSize</c>) only when the exception's
    /// parameter is an option.</summary>
    public static string Rewrite(Exception e)
    {
        var message = ParameterSuffix().Replace(e.Message.ReplaceLineEndings(" "), "");
        var plain = e is ArgumentException { ParamName: { } p } && ByMember.ContainsKey(p);
        return Member().Replace(message, m =>
            (m.Groups[1].Success || plain) && ByMember.TryGetValue(m.Groups[2].Value, out var flag) ? flag : m.Value);
    }

    [GeneratedRegex(@"\s*\(Parameter '[^']*'\)")]
    private static partial Regex ParameterSuffix();

    [GeneratedRegex(@"\b((?:TranslatorOptions|DecodingOptions|ModelLoadOptions)\.)?([A-Z][A-Za-z]+)\b")]
    private static partial Regex Member();
}
