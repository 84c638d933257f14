namespace TransformerInference;

/// <summary>How the weights of the linear layers (attention, feed-forward, output projection) are stored.</summary>
public enum WeightQuantization
{
    /// <summary>As loaded, in the model's floating-point type.</summary>
    None,

    /// <summary>Symmetric int8 with one float scale per output channel, quantized at load from the float checkpoint.
    /// Activations stay float32 between products; inside each product every row of activations is rounded to an int16
    /// grid of its own, fine enough that the int8 × int16 sums are exact in int32 (integer multiply-adds: AVX2,
    /// AVX-512, AVX-VNNI), then scaled back to float32. About a quarter of the float32 weight memory and bandwidth.
    /// CPU float32 models only.</summary>
    Int8,

    /// <summary>bfloat16 (rounded to nearest even at load) widened to float32 in registers; activations, sums,
    /// attention and softmax stay float32. Half the float32 weight memory and bandwidth. CPU float32 models only
    /// (for bfloat16 activations as well, set the model's dtype instead).</summary>
    BFloat16,
}
