"""pruner component."""
