"""CompressionPlanner: searches structures × sparsities × quantization modes for
the best model within the gate (see README.md)."""
