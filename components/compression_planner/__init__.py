"""CompressionPlanner: searches pruning structures × quantization modes for the best model within the gate (see README.md)."""
