"""CompressionEvaluator: the deployment gate of a compressed model (see README.md)."""
