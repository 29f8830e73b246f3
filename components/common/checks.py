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


def check_distillation(weight: Any, temperature: Any) -> None:
  """The distillation parameters of any fine-tuning (Pruner, Quantizer's QAT).

  ``weight`` is w in [0, 1] and ``temperature`` T in (0, 100] of
  (1 - w) * task loss + w * T^2 * KL(teacher_T || student_T); see
  common/distillation.py.

  Raises:
    TypeError: either is not a number.
    ValueError: either is out of its range.
  """
  w = check_number("distillation_weight", weight)
  t = check_number("distillation_temperature", temperature)
  if not 0.0 <= w <= 1.0:
    raise ValueError(
        f"`distillation_weight`={w!r} is outside [0, 1]: it is the share of "
        "the loss taken by matching the input model's outputs (0 = plain "
        "fine-tuning, 1 = distillation only). Use e.g. 0.5, or 0 to turn "
        "distillation off.")
  if not 0.0 < t <= 100.0:
    raise ValueError(
        f"`distillation_temperature`={t!r} is outside (0, 100]: it divides "
        "both models' logits before the KL term (1 = as they are, higher = "
        "softer). Use e.g. 2.0.")
