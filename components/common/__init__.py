"""TFX-free helpers shared by the Pruner, the Quantizer and the CompressionEvaluator."""
