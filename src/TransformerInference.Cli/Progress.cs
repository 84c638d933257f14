using Spectre.Console;

namespace TransformerInference.Cli;

/// <summary>Live progress on stderr (loading, lines done, lines/s, tokens/s) when a person watches it; silent otherwise.</summary>
internal static class Progress
{
    /// <summary>Runs <paramref name="work"/>, giving it a callback that updates the status line. The line is drawn
    /// only when stderr is a terminal, the translations do not go to that screen, and not <c>--quiet</c>.</summary>
    public static async Task<int> RunAsync(Io io, bool quiet, bool toFile, Func<Action<string>, Task<int>> work)
    {
        if (quiet || !io.StderrIsTerminal || (io.StdoutIsTerminal && !toFile)) return await work(_ => { });
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(io.Stderr) });
        return await console.Status()
            .Spinner(Spinner.Known.Dots)
            .StartAsync("starting", ctx =>
            {
                var last = DateTime.MinValue;
                return work(text =>
                {
                    // A few redraws a second are enough; decoding need not wait for the terminal.
                    var now = DateTime.UtcNow;
                    if (now - last < TimeSpan.FromMilliseconds(200)) return;
                    last = now;
                    ctx.Status(Markup.Escape(text));
                });
            });
    }
}
