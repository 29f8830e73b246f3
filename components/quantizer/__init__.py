"""Quantizer: turns a Keras model into a quantized TFLite model (see README.md)."""
