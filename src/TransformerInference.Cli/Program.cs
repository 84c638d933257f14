using System.Text;
using TransformerInference.Cli;

Console.OutputEncoding = new UTF8Encoding(false);
Console.InputEncoding = new UTF8Encoding(false);
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true; // finish the current step, then stop
    cancel.Cancel();
};
// Progress on stderr only where a person watches it and the translations do not share the screen.
var progress = !Console.IsErrorRedirected && Console.IsOutputRedirected;
return await CliApp.RunAsync(args, Console.In, Console.Out, Console.Error, progress, cancel.Token);
