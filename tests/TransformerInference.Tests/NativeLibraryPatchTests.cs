using System.Text;
using Xunit;

namespace TransformerInference.Tests;

/// <summary>The build marks libLibTorchSharp.so's GLIBCXX_3.4.32 need weak in the output, whatever the host's libstdc++.</summary>
public class NativeLibraryPatchTests
{
    [Fact]
    public void OutputCopyOfLibTorchSharpHasTheGlibcxxNeedMarkedWeak()
    {
        var path = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(path), $"the test output should hold {path}");
        var needs = VersionNeeds(File.ReadAllBytes(path));
        Assert.Contains("GLIBCXX_3.4.32", needs.Keys);
        Assert.True((needs["GLIBCXX_3.4.32"] & 0x2) != 0, "GLIBCXX_3.4.32 should carry VER_FLG_WEAK");
        // Only that entry: every other version need stays strong.
        Assert.All(needs.Where(n => n.Key != "GLIBCXX_3.4.32"), n => Assert.Equal(0, n.Value & 0x2));
    }

    [Fact]
    public void NativeLoadFailureMessageNamesLibstdcxxAndTheLoaderError()
    {
        var e = new TypeInitializationException("TorchSharp.torch", new NotSupportedException("doesn't contain a reference to libtorch-cpu-linux-x64"));
        var message = NativeLibraryCheck.Explain(e, "/app/libLibTorchSharp.so: version `GLIBCXX_3.4.32' not found");
        Assert.Contains("libstdc++", message);
        Assert.Contains("GLIBCXX_3.4.32", message);
        Assert.Contains("libtorch-cpu-linux-x64 2.10.0", message);
        Assert.EndsWith("version `GLIBCXX_3.4.32' not found", message);
        // Without the loader's words, the innermost exception's message is kept.
        Assert.EndsWith("doesn't contain a reference to libtorch-cpu-linux-x64", NativeLibraryCheck.Explain(e, null));
    }

    /// <summary>Every Elf64_Vernaux entry of the SHT_GNU_verneed section: name → vna_flags.</summary>
    private static Dictionary<string, int> VersionNeeds(byte[] b)
    {
        Assert.True(b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F' && b[4] == 2 && b[5] == 1, "little-endian ELF64");
        var result = new Dictionary<string, int>();
        long shoff = BitConverter.ToInt64(b, 0x28);
        int shentsize = BitConverter.ToUInt16(b, 0x3A), shnum = BitConverter.ToUInt16(b, 0x3C);
        for (var s = 0; s < shnum; s++)
        {
            var sh = (int)(shoff + (long)s * shentsize);
            if (BitConverter.ToUInt32(b, sh + 4) != 0x6ffffffe) continue;
            var vn = (int)BitConverter.ToInt64(b, sh + 0x18);
            int link = BitConverter.ToInt32(b, sh + 0x28), count = BitConverter.ToInt32(b, sh + 0x2C);
            var strings = (int)BitConverter.ToInt64(b, (int)(shoff + (long)link * shentsize) + 0x18);
            for (var i = 0; i < count; i++)
            {
                var aux = vn + (int)BitConverter.ToUInt32(b, vn + 8);
                for (var j = 0; j < BitConverter.ToUInt16(b, vn + 2); j++)
                {
                    var at = strings + (int)BitConverter.ToUInt32(b, aux + 8);
                    var end = Array.IndexOf(b, (byte)0, at);
                    result[Encoding.ASCII.GetString(b, at, end - at)] = BitConverter.ToUInt16(b, aux + 4);
                    aux += (int)BitConverter.ToUInt32(b, aux + 12);
                }
                vn += (int)BitConverter.ToUInt32(b, vn + 12);
            }
        }
        return result;
    }
}
