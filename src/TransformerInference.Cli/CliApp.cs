using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Reflection;

namespace TransformerInference.Cli;

/// <summary>The <c>transformer-inference</c> command line: <c>translate</c> and <c>inspect</c>.</summary>
/// <remarks>Exit codes: see <see cref="ExitCodes"/>.</remarks>
internal static class CliApp
{
    public const string Name = "transformer-inference";

    /// <summary>Runs the command line in this process (the tool's entry point; tests call it directly).</summary>
    /// <param name="args">The arguments.</param>
    /// <param name="stdin">Read when no text is given and no <c>--input</c>.</param>
    /// <param name="stdout">Translations (unless <c>--output</c>).</param>
    /// <param name="stderr">Errors, progress and the <c>--verbose</c> summary.</param>
    /// <param name="stderrIsTerminal">Whether <paramref name="stderr"/> is a terminal (live progress is drawn there).</param>
    /// <param name="stdoutIsTerminal">Whether <paramref name="stdout"/> is a terminal (then translations are the
    /// progress, unless <c>--output</c> sends them to a file).</param>
    /// <param name="cancellationToken">Stops at the next decoding step.</param>
    public static async Task<int> RunAsync(string[] args, TextReader stdin, TextWriter stdout, TextWriter stderr,
        bool stderrIsTerminal = false, bool stdoutIsTerminal = false, CancellationToken cancellationToken = default)
    {
        var io = new Io(stdin, stdout, stderr, stderrIsTerminal, stdoutIsTerminal);
        var root = new RootCommand("Translate text with encoder-decoder transformers (Hugging Face Marian, M2M100, NLLB folders; " +
                                   "pytorch-transformer seed checkpoints) on TorchSharp.")
        {
            TranslateCommand.Create(io),
            InspectCommand.Create(io),
        };
        var beforeDoubleDash = args.TakeWhile(a => a != "--").ToArray();
        if (beforeDoubleDash.Contains("--version") && !beforeDoubleDash.Contains("--help") && !beforeDoubleDash.Contains("-h"))
        {
            stdout.WriteLine(Version);
            return ExitCodes.Success;
        }
        var parse = root.Parse(args);
        try
        {
            if (parse.Errors.Count > 0 && parse.Action is not CommandLineAction { ClearsParseErrors: true })
            {
                foreach (var error in parse.Errors)
                {
                    // Name the flag a bad value belongs to.
                    var option = (error.SymbolResult as OptionResult ?? error.SymbolResult?.Parent as OptionResult)?.Option;
                    var message = option is null || error.Message.Contains(option.Name, StringComparison.Ordinal)
                        ? error.Message
                        : $"{option.Name}: {error.Message}";
                    stderr.WriteLine($"{Name}: {message}");
                }
                stderr.WriteLine($"{Name}: see '{Name}{CommandName(parse)} --help'");
                return ExitCodes.Usage;
            }
            var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
            return await parse.InvokeAsync(config, cancellationToken);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"{Name}: {e.Message} (see --help)");
            return ExitCodes.Usage;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine($"{Name}: cancelled");
            return ExitCodes.Cancelled;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or CheckpointException or InvalidDataException
                                      or NotSupportedException or UnauthorizedAccessException or IOException or DllNotFoundException
                                      or ArgumentException)
        {
            stderr.WriteLine($"{Name}: {Flags.Rewrite(e)}");
            return ExitCodes.UnusableFiles;
        }
        catch (Exception e)
        {
            stderr.WriteLine($"{Name}: internal error ({e.GetType().Name}): {e.Message.ReplaceLineEndings(" ")}");
            return ExitCodes.InternalError;
        }
    }

    /// <summary>The tool's version (informational: the package version and the commit).</summary>
    public static string Version =>
        typeof(CliApp).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(CliApp).Assembly.GetName().Version?.ToString() ?? "unknown";

    private static string CommandName(ParseResult parse) =>
        parse.CommandResult.Command is RootCommand ? "" : " " + parse.CommandResult.Command.Name;
}

/// <summary>The tool's exit codes (also in the README).</summary>
internal static class ExitCodes
{
    /// <summary>Every input was translated.</summary>
    public const int Success = 0;
    /// <summary>A model, tokenizer, config or input file is missing, unreadable or unusable (the message names it).</summary>
    public const int UnusableFiles = 1;
    /// <summary>A usage error: unknown, conflicting or ignored flags, or a value wrong for this model (named as typed, once).</summary>
    public const int Usage = 2;
    /// <summary>Some inputs could not be translated (each has an ERROR line); the others were.</summary>
    public const int SomeInputsFailed = 3;
    /// <summary>An unexpected internal error (a bug: please report it with the message).</summary>
    public const int InternalError = 70;
    /// <summary>Cancelled (Ctrl+C).</summary>
    public const int Cancelled = 130;
}

/// <summary>A bad command line: reported once, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>The streams a run reads and writes.</summary>
internal sealed record Io(TextReader Stdin, TextWriter Stdout, TextWriter Stderr, bool StderrIsTerminal, bool StdoutIsTerminal);
