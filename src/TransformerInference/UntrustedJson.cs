using System.Text;
using System.Text.Json;

namespace TransformerInference;

/// <summary>
/// Parses JSON read from model folders (config, generation config, tokenizer files), which come from the internet:
/// the bytes must be valid UTF-8 and every string must decode, checked once here, so readers that call
/// <see cref="JsonElement.GetString"/> later never meet an untyped <see cref="InvalidOperationException"/>.
/// Nesting is limited by <see cref="JsonDocumentOptions.MaxDepth"/> (64); no recursion runs over the document.
/// </summary>
internal static class UntrustedJson
{
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Largest JSON file read (256 MiB): a bigger <c>tokenizer.json</c> or config is not a model file.</summary>
    public const long MaxBytes = 256L << 20;

    /// <summary>Reads and parses <paramref name="path"/>; problems throw what <paramref name="fail"/> makes of a message.</summary>
    public static JsonDocument ParseFile(string path, Func<string, Exception?, Exception> fail)
    {
        var length = new FileInfo(path).Length;
        if (length > MaxBytes) throw fail($"the file has {length} bytes; JSON files over {MaxBytes} bytes are not read", null);
        return Parse(File.ReadAllBytes(path), fail);
    }

    /// <summary>Reads a whole stream (at most <see cref="MaxBytes"/>) and parses it.</summary>
    public static JsonDocument ParseStream(Stream stream, Func<string, Exception?, Exception> fail)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while ((read = stream.Read(chunk, 0, chunk.Length)) > 0)
        {
            if (buffer.Length + read > MaxBytes) throw fail($"JSON input over {MaxBytes} bytes is not read", null);
            buffer.Write(chunk, 0, read);
        }
        return Parse(buffer.ToArray(), fail);
    }

    /// <summary>Parses UTF-8 bytes (a byte-order mark is skipped) and checks that every string and property name decodes.</summary>
    public static JsonDocument Parse(ReadOnlyMemory<byte> bytes, Func<string, Exception?, Exception> fail)
    {
        var span = bytes.Span;
        if (span.StartsWith(new byte[] { 0xEF, 0xBB, 0xBF })) bytes = bytes[3..];
        try
        {
            Strict.GetCharCount(bytes.Span);
        }
        catch (DecoderFallbackException e)
        {
            throw fail($"the file is not valid UTF-8 (byte offset {e.Index})", e);
        }
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(bytes);
        }
        catch (JsonException e)
        {
            throw fail($"not valid JSON: {e.Message}", e);
        }
        try
        {
            CheckStrings(document.RootElement, fail);
            return document;
        }
        catch
        {
            document.Dispose();
            throw;
        }
    }

    /// <summary>Visits every value with an explicit stack (documents nest at most 64 deep, but no recursion is needed)
    /// and decodes each string: an escaped lone surrogate (<c>"\ud800"</c>) fails here, naming its JSON path.</summary>
    private static void CheckStrings(JsonElement root, Func<string, Exception?, Exception> fail)
    {
        var pending = new Stack<(JsonElement Element, string Path)>();
        pending.Push((root, "$"));
        while (pending.Count > 0)
        {
            var (element, path) = pending.Pop();
            switch (element.ValueKind)
            {
                case JsonValueKind.Object:
                    foreach (var property in element.EnumerateObject())
                    {
                        string name;
                        try
                        {
                            name = property.Name;
                        }
                        catch (InvalidOperationException e)
                        {
                            throw fail($"a property name under {path} is not valid text", e);
                        }
                        pending.Push((property.Value, path + "." + name));
                    }
                    break;
                case JsonValueKind.Array:
                    var index = 0;
                    foreach (var item in element.EnumerateArray()) pending.Push((item, $"{path}[{index++}]"));
                    break;
                case JsonValueKind.String:
                    try
                    {
                        element.GetString();
                    }
                    catch (InvalidOperationException e)
                    {
                        throw fail($"field '{path}' holds a string that is not valid text", e);
                    }
                    break;
            }
        }
    }
}
