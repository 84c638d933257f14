using static TorchSharp.torch;

namespace TransformerInference.Decoding;

/// <summary>
/// All that search needs from a model: encode a batch once, then step one token at a time with a cache.
/// Search code sees nothing else of a model, so a new model family plugs in by implementing this.
/// </summary>
public interface ISeq2SeqModel
{
    /// <summary>Id that starts every target sequence.</summary>
    int SosId { get; }
    /// <summary>Id that ends a target sequence.</summary>
    int EosId { get; }
    /// <summary>Padding id (right padding of source batches).</summary>
    int PadId { get; }
    /// <summary>Size of the logits vector.</summary>
    int TargetVocabSize { get; }
    /// <summary>Longest source sequence the model accepts, special tokens included.</summary>
    int MaxSourceLength { get; }
    /// <summary>Longest target sequence the model can produce, the start token included.</summary>
    int MaxTargetLength { get; }
    /// <summary>Device the model's tensors live on.</summary>
    Device Device { get; }

    /// <summary>Runs the encoder on <paramref name="sourceIds"/> (<c>[batch, source_len]</c> int64, right-padded with
    /// <see cref="PadId"/>) and returns an empty cache able to hold <paramref name="capacity"/> target positions.</summary>
    KvCache Start(Tensor sourceIds, long capacity);

    /// <summary>Feeds <paramref name="tokens"/> (<c>[batch, 1]</c> int64, on the CPU or on <see cref="Device"/>: the
    /// search drivers pass host-built ids, which a model can check without a device sync) at the next position and returns the
    /// float32 scores <c>[batch, vocab]</c> for the position after it (raw logits or log-probabilities).</summary>
    Tensor Step(Tensor tokens, KvCache cache);
}
