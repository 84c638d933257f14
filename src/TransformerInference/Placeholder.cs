namespace TransformerInference; internal static class Placeholder { }
