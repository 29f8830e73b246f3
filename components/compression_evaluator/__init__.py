"""compression_evaluator component."""
