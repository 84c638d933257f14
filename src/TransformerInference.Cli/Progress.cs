using Spectre.Console;

namespace TransformerInference.Cli;

/// <summary>Live progress on stderr (loading, lines done, lines/s, tokens/s) when a person watches it; silent otherwise.</summary>
internal static class Progress
{
    /// <summary>Runs <paramref name="work"/>, giving it a callback that updates the status line.</summary>
    public static async Task<int> RunAsync(Io io, bool quiet, Func<Action<string>, Task<int>> work)
    {
        if (!io.Progress || quiet) return await work(_ => { });
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(io.Stderr) });
        return await console.Status()
            .Spinner(Spinner.Known.Dots)
            .StartAsync("starting", ctx => work(text => ctx.Status(Markup.Escape(text))));
    }
}
