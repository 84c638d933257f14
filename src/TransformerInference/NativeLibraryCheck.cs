using System.Runtime.InteropServices;
using TorchSharp;

namespace TransformerInference;

/// <summary>
/// Turns TorchSharp's misleading first-use failure (a <see cref="TypeInitializationException"/> that blames a missing
/// backend package) into one message that names the likely cause: no LibTorch backend package, or, on Linux, a
/// system libstdc++ without <c>GLIBCXX_3.4.32</c> (Debian 12, Ubuntu 22.04) and an unpatched
/// <c>libLibTorchSharp.so</c>. The loader's own error text is appended, which names the missing symbol version.
/// </summary>
internal static class NativeLibraryCheck
{
    private static readonly Lazy<Exception?> Failure = new(Probe, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Throws <see cref="DllNotFoundException"/> with the explanation when LibTorch cannot be used.</summary>
    public static void EnsureLoaded()
    {
        if (Failure.Value is { } e) throw new DllNotFoundException(Explain(e, LoaderError()), e);
    }

    private static Exception? Probe()
    {
        try
        {
            using var t = torch.zeros(1);
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or DllNotFoundException or NotSupportedException or EntryPointNotFoundException)
        {
            return e;
        }
    }

    internal static string Explain(Exception e, string? loaderError)
    {
        var message = "TorchSharp's native library (libLibTorchSharp with LibTorch) could not be loaded. Likely causes: "
            + "(1) the app references no LibTorch backend: add libtorch-cpu-linux-x64 2.10.0 (or TorchSharp-cpu / "
            + "TorchSharp-cuda-linux 0.107.0) to the app project; "
            + "(2) on Linux, the system libstdc++ is older than GLIBCXX_3.4.32 (Debian 12, Ubuntu 22.04) and the output "
            + "copy of libLibTorchSharp.so was not patched: build the app with the TransformerInference package (its build "
            + "step marks that requirement weak; do not set TransformerInferencePatchLibTorchSharp=false) or install a newer "
            + "libstdc++; `ldd libLibTorchSharp.so` shows the missing version.";
        var detail = loaderError ?? Innermost(e).Message;
        return $"{message} Loader: {detail.ReplaceLineEndings(" ")}";
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null) e = e.InnerException;
        return e;
    }

    /// <summary>The dynamic loader's own words (e.g. "version `GLIBCXX_3.4.32' not found") for the library beside the app.</summary>
    private static string? LoaderError()
    {
        if (!OperatingSystem.IsLinux()) return null;
        var rid = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "linux-arm64" : "linux-x64";
        foreach (var path in new[]
                 {
                     Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native", "libLibTorchSharp.so"),
                     Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"),
                 })
        {
            if (!File.Exists(path)) continue;
            try
            {
                NativeLibrary.Free(NativeLibrary.Load(path));
            }
            catch (DllNotFoundException e)
            {
                return e.Message;
            }
            catch (BadImageFormatException e)
            {
                return e.Message;
            }
        }
        return null;
    }
}
