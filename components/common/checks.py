"""Type checks shared by the components' configs: one wording for every parameter."""

from typing import Any


def check_str(name: str, value: Any, optional: bool = False) -> None:
  """Raises TypeError naming ``name`` unless ``value`` is a string (or None if optional)."""
  if value is None and optional:
    return
  if not isinstance(value, str):
    raise TypeError(f"`{name}` must be a string{' or None' if optional else ''}"
                    f", got {type(value).__name__} {value!r}.")
