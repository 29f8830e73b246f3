"""Placeholder until the Pruner lands (issue 4)."""
class Pruner:  # pragma: no cover
  def __init__(self, *args, **kwargs):
    raise NotImplementedError("Pruner is being built")
