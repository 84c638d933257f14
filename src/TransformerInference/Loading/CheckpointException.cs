namespace TransformerInference.Loading;

/// <summary>
/// A model file could not be used: unreadable, truncated, of an unsupported format, or with a missing, unexpected or
/// mis-shaped tensor. The message names the file and, where there is one, the tensor.
/// </summary>
public sealed class CheckpointException : Exception
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong.</param>
    /// <param name="path">The file (or folder) being loaded.</param>
    /// <param name="tensorName">The tensor concerned, if any.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public CheckpointException(string message, string? path = null, string? tensorName = null, Exception? inner = null)
        : base(Compose(message, path, tensorName), inner)
    {
        FilePath = path;
        TensorName = tensorName;
    }

    /// <summary>The file or folder being loaded, if known.</summary>
    public string? FilePath { get; }

    /// <summary>The tensor the problem concerns, if any.</summary>
    public string? TensorName { get; }

    private static string Compose(string message, string? path, string? tensorName)
    {
        var where = (path, tensorName) switch
        {
            (not null, not null) => $" (file '{path}', tensor '{tensorName}')",
            (not null, null) => $" (file '{path}')",
            (null, not null) => $" (tensor '{tensorName}')",
            _ => "",
        };
        return message + where;
    }
}
