using TorchSharp;
using TransformerInference.Modeling.Kernels;
using static TorchSharp.torch;

namespace TransformerInference.Loading;

/// <summary>
/// Named tensors in our canonical naming, handed out to the modules that build the graph. It checks each tensor's
/// presence and shape as it is taken (clear errors instead of native crashes) and knows which ones were never taken.
/// </summary>
internal sealed class WeightSet : IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors;
    private readonly HashSet<string> _taken = new();
    private readonly List<Tensor> _made = new();
    private readonly List<LinearWeight> _linears = new();
    private bool _committed;

    public WeightSet(Dictionary<string, Tensor> tensors, string source, Device device, ScalarType dtype)
    {
        _tensors = tensors;
        Source = source;
        Device = device;
        DType = dtype;
    }

    /// <summary>The file or folder the tensors came from (for messages).</summary>
    public string Source { get; }
    public Device Device { get; }
    public ScalarType DType { get; }

    /// <summary>The name a canonical tensor has in the file, for messages (Hugging Face folders are renamed on load).</summary>
    public Func<string, string> NameInFile { get; init; } = name => name;

    /// <summary>How weight products are prepared (kernel, weight format); chosen by the loader.</summary>
    public LinearKernels Kernels { get; init; } = LinearKernels.LibTorch;

    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>Elements of every tensor taken so far: the model's parameter count (tied tables once).</summary>
    public long TakenElements { get; private set; }

    /// <summary>Takes a tensor with the given shape, converted to the target device and dtype; the caller owns it.</summary>
    public Tensor Take(string name, params long[] shape)
    {
        if (!_tensors.TryGetValue(name, out var t))
            throw new CheckpointException("A tensor the model needs is missing", Source, NameInFile(name));
        if (!t.shape.SequenceEqual(shape))
            throw new CheckpointException(
                $"Tensor has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", shape)}]", Source, NameInFile(name));
        if (!t.is_floating_point())
            throw new CheckpointException($"Tensor has dtype {t.dtype}, expected a floating-point type", Source, NameInFile(name));
        _taken.Add(name);
        TakenElements += t.numel();
        var converted = t.to(DType, Device).DetachFromDisposeScope();
        if (!ReferenceEquals(converted, t) && converted.Handle != t.Handle)
        {
            t.Dispose();
            _tensors[name] = converted;
        }
        return converted;
    }

    /// <summary>Takes a tensor if the model variant has it.</summary>
    public Tensor? TakeIf(bool present, string name, params long[] shape) => present ? Take(name, shape) : null;

    /// <summary>Throws if the file holds tensors that no module took: a sign of a wrong architecture guess.</summary>
    public void EnsureAllTaken()
    {
        var extra = _tensors.Keys.Where(k => !_taken.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (extra.Count > 0)
            throw new CheckpointException(
                $"The file has {extra.Count} tensor(s) the model does not use: {string.Join(", ", extra.Take(8))}{(extra.Count > 8 ? ", ..." : "")}",
                Source, extra[0]);
    }

    /// <summary>Registers a tensor a module derived from taken ones (a concatenation, a view), so a failed build
    /// frees it too; returns it detached from any dispose scope.</summary>
    public Tensor Made(Tensor t)
    {
        _made.Add(t);
        return t.DetachFromDisposeScope();
    }

    /// <summary>Prepares a weight product from a taken (or made) weight and bias; the product owns them.</summary>
    public LinearWeight Linear((Tensor Weight, Tensor? Bias) p)
    {
        var linear = Kernels.Create(p.Weight, p.Bias);
        _linears.Add(linear);
        return linear;
    }

    /// <summary>Hands the taken tensors over to the model that was built from them.</summary>
    public void Commit() => _committed = true;

    /// <summary>Disposes the tensors no module took; after a failed build (no <see cref="Commit"/>) the taken ones too.</summary>
    public void Dispose()
    {
        foreach (var (name, t) in _tensors)
            if (!_committed || !_taken.Contains(name)) t.Dispose();
        if (!_committed)
        {
            foreach (var t in _made) t.Dispose();
            foreach (var l in _linears) l.Dispose();
        }
        _tensors.Clear();
        _made.Clear();
        _linears.Clear();
    }
}
