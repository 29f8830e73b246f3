"""Type checks shared by the components' configs: one wording for every parameter."""

import math
from typing import Any, Optional


def check_str(name: str, value: Any, optional: bool = False) -> None:
  """Raises TypeError naming ``name`` unless ``value`` is a string (or None if optional)."""
  if value is None and optional:
    return
  if not isinstance(value, str):
    raise TypeError(f"`{name}` must be a string{' or None' if optional else ''}"
                    f", got {type(value).__name__} {value!r}.")


def check_int(name: str, value: Any, optional: bool = False) -> None:
  """Raises TypeError naming ``name`` unless ``value`` is an int, not a bool (or None if optional)."""
  if value is None and optional:
    return
  if isinstance(value, bool) or not isinstance(value, int):
    raise TypeError(f"`{name}` must be an integer{' or None' if optional else ''}"
                    f", got {type(value).__name__} {value!r}.")


def check_number(name: str, value: Any, optional: bool = False) -> Optional[float]:
  """``value`` as a finite float (None stays None if optional).

  Raises:
    TypeError: not an int or float (a bool is not a number here).
    ValueError: NaN or infinite.
  """
  if value is None and optional:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"`{name}` must be a number{' or None' if optional else ''}"
                    f", got {type(value).__name__} {value!r}.")
  value = float(value)
  if not math.isfinite(value):
    raise ValueError(f"`{name}`={value!r} must be a finite number.")
  return value
