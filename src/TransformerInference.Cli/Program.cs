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
return await CliApp.RunAsync(args, Console.In, Console.Out, Console.Error,
    stderrIsTerminal: !Console.IsErrorRedirected, stdoutIsTerminal: !Console.IsOutputRedirected, cancel.Token);
