global using TransformerInference.Decoding;
global using TransformerInference.Loading;
global using TransformerInference.Modeling;
global using TransformerInference.Tokenization;
