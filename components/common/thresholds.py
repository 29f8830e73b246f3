"""The accuracy gate: one definition used by the CompressionEvaluator and the Pruner search.

A candidate passes when every threshold that is set holds. Quality thresholds compare
the candidate's metric with the baseline's on the same examples:

* ``max_drop``: baseline - candidate must be at most this, in the metric's units
  (0.01 = one accuracy point). For a lower-is-better metric the drop is
  candidate - baseline.
* ``max_relative_drop``: the drop divided by the baseline's value.
* ``min_value``: the candidate's value must be at least this (higher-is-better
  metrics only).

Efficiency thresholds (checked by the CompressionEvaluator only, since the Pruner
search does not measure latency):

* ``min_compression_ratio``: baseline bytes / candidate bytes must be at least this.
* ``max_latency_ratio``: candidate latency / baseline latency must be at most this.

Example:

    t = GateThresholds(metric="accuracy", max_drop=0.01)
    checks = t.check(baseline={"accuracy": 0.97}, candidate={"accuracy": 0.965})
    assert all(c.passed for c in checks)
"""

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional

from tfx_compression.components.common import checks as checks_lib

# name -> (higher_is_better, bounded to [0, 1])
METRICS: Dict[str, tuple] = {
    "accuracy": (True, True),
    "precision": (True, True),
    "recall": (True, True),
    "f1": (True, True),
    "auc": (True, True),
    "top_k_accuracy": (True, True),
    "crossentropy": (False, False),
}
METRIC_ALIASES = {
    "sparse_categorical_accuracy": "accuracy",
    "categorical_accuracy": "accuracy",
    "binary_accuracy": "accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_categorical_crossentropy": "crossentropy",
    "categorical_crossentropy": "crossentropy",
    "binary_crossentropy": "crossentropy",
    "loss": "crossentropy",
    "f1_score": "f1",
}

QUALITY_FIELDS = ("max_drop", "max_relative_drop", "min_value")
EFFICIENCY_FIELDS = ("min_compression_ratio", "max_latency_ratio")
THRESHOLD_FIELDS = ("metric",) + QUALITY_FIELDS + EFFICIENCY_FIELDS
# Values that stand in for a threshold known only at run time (a Kubeflow
# RuntimeParameter), so that a component can check every other rule when the
# pipeline is defined; valid with any metric but min_value's (a floor on a
# lower-is-better metric is refused whatever its value).
STAND_INS = {"max_drop": 0.0, "max_relative_drop": 0.0, "min_value": 0.0,
             "min_compression_ratio": 1.0, "max_latency_ratio": 1.0}


def canonical_metric(name: Any, parameter: str = "metric") -> str:
  """Returns the canonical metric name, or raises with the known names."""
  if not isinstance(name, str):
    raise TypeError(f"`{parameter}` must be a string naming a metric, got "
                    f"{type(name).__name__} {name!r}.")
  key = name.strip().lower()
  key = METRIC_ALIASES.get(key, key)
  if key not in METRICS:
    known = ", ".join(sorted(set(METRICS) | set(METRIC_ALIASES)))
    raise ValueError(f"`{parameter}`={name!r} is not a metric this gate knows. "
                     f"Use one of: {known}.")
  return key


def higher_is_better(metric: str) -> bool:
  return METRICS[canonical_metric(metric)][0]


@dataclasses.dataclass(frozen=True)
class ThresholdCheck:
  """One threshold's outcome."""
  name: str
  value: Optional[float]
  limit: float
  comparison: str  # "<=" or ">="
  passed: bool
  description: str

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def sentence(self) -> str:
    shown = "n/a" if self.value is None else f"{self.value:.4g}"
    verdict = "passed" if self.passed else "FAILED"
    return (f"{self.name} {verdict}: {self.description} is {shown}, "
            f"limit {self.comparison} {self.limit:g}")


@dataclasses.dataclass(frozen=True)
class GateThresholds:
  """Self-validating gate thresholds (see the module docstring).

  Raises on construction:
    TypeError: a threshold is not a number, or ``metric`` is not a string.
    ValueError: a value outside its range, an unknown metric, no quality
      threshold at all, or thresholds that contradict each other.
  """
  metric: str = "accuracy"
  max_drop: Optional[float] = None
  max_relative_drop: Optional[float] = None
  min_value: Optional[float] = None
  min_compression_ratio: Optional[float] = None
  max_latency_ratio: Optional[float] = None

  def __post_init__(self):
    object.__setattr__(self, "metric", canonical_metric(self.metric))
    for name in QUALITY_FIELDS + EFFICIENCY_FIELDS:
      object.__setattr__(self, name, checks_lib.check_number(
          name, getattr(self, name), optional=True))
    if all(getattr(self, name) is None for name in QUALITY_FIELDS):
      raise ValueError(
          "The gate needs at least one of `max_drop`, `max_relative_drop` or "
          "`min_value`; none was set. For example max_drop=0.01 allows one "
          "accuracy point of loss.")
    if self.max_drop is not None and self.max_drop < 0:
      raise ValueError(
          f"`max_drop`={self.max_drop} is negative, which would require the "
          "compressed model to beat the baseline. Use a value >= 0 (0.01 = one "
          "point), or `min_value` for an absolute floor.")
    if self.max_relative_drop is not None and not 0 <= self.max_relative_drop < 1:
      raise ValueError(
          f"`max_relative_drop`={self.max_relative_drop} must be in [0, 1): it "
          "is a fraction of the baseline's value (0.02 = 2% of it).")
    higher, bounded = METRICS[self.metric]
    if bounded and self.max_drop is not None and self.max_drop >= 1:
      raise ValueError(
          f"`max_drop`={self.max_drop} is at least 1, the whole range of "
          f"{self.metric} (it lies in [0, 1]), so it rejects nothing. Use a "
          "value below 1 (0.01 = one point).")
    if self.min_value is not None:
      if not higher:
        raise ValueError(
            f"`min_value`={self.min_value} contradicts `metric`="
            f"{self.metric!r}: {self.metric} is lower-is-better, so a floor on "
            "it never rejects a worse model. Use `max_drop` or "
            "`max_relative_drop` instead.")
      if bounded and self.min_value < 0:
        raise ValueError(
            f"`min_value`={self.min_value} is below 0, the least "
            f"{self.metric} can be, so it rejects nothing. Use a value in "
            "[0, 1].")
    if self.min_compression_ratio is not None and self.min_compression_ratio <= 0:
      raise ValueError(
          f"`min_compression_ratio`={self.min_compression_ratio} must be > 0 "
          "(baseline bytes / candidate bytes; 4.0 = four times smaller).")
    if self.max_latency_ratio is not None and self.max_latency_ratio <= 0:
      raise ValueError(
          f"`max_latency_ratio`={self.max_latency_ratio} must be > 0 "
          "(candidate latency / baseline latency; 1.0 = no slower).")

  @classmethod
  def from_kwargs(cls, **kwargs) -> "GateThresholds":
    """Builds from component parameters, ignoring unknown keys set to None."""
    return cls(**{k: v for k, v in kwargs.items() if k in THRESHOLD_FIELDS})

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def drop(self, baseline_value: float, candidate_value: float) -> float:
    """How much worse the candidate is, in the metric's units (>0 = worse)."""
    if higher_is_better(self.metric):
      return baseline_value - candidate_value
    return candidate_value - baseline_value

  def worst_allowed(self, baseline_value: Optional[float]) -> Optional[float]:
    """The worst metric value the quality thresholds allow (None if unknown).

    For a higher-is-better metric the highest of the floors; for a lower-is-
    better one the lowest of the ceilings. The drop thresholds need a finite
    ``baseline_value``; ``min_value`` does not.

    Example:

        GateThresholds(max_drop=0.02, min_value=0.5).worst_allowed(0.95)  # 0.93
    """
    higher = higher_is_better(self.metric)
    bounds = []
    if (isinstance(baseline_value, (int, float))
        and not isinstance(baseline_value, bool)
        and math.isfinite(baseline_value)):
      if self.max_drop is not None:
        bounds.append(baseline_value - self.max_drop if higher
                      else baseline_value + self.max_drop)
      if self.max_relative_drop is not None:
        delta = abs(baseline_value) * self.max_relative_drop
        bounds.append(baseline_value - delta if higher
                      else baseline_value + delta)
    if self.min_value is not None and higher:
      bounds.append(self.min_value)
    if not bounds:
      return None
    return max(bounds) if higher else min(bounds)

  def check_quality(self, baseline_value: float,
                    candidate_value: float) -> List[ThresholdCheck]:
    """Checks the quality thresholds; a NaN value fails every check."""
    checks = []
    finite = math.isfinite(baseline_value) and math.isfinite(candidate_value)
    drop = self.drop(baseline_value, candidate_value) if finite else float("nan")
    if self.max_drop is not None:
      checks.append(ThresholdCheck(
          "max_drop", drop, self.max_drop, "<=",
          finite and drop <= self.max_drop + 1e-12,
          f"the drop in {self.metric} (baseline {baseline_value:.4f}, "
          f"candidate {candidate_value:.4f})"))
    if self.max_relative_drop is not None:
      rel = (drop / abs(baseline_value)
             if finite and baseline_value != 0 else float("nan"))
      checks.append(ThresholdCheck(
          "max_relative_drop", rel, self.max_relative_drop, "<=",
          math.isfinite(rel) and rel <= self.max_relative_drop + 1e-12,
          f"the relative drop in {self.metric}"))
    if self.min_value is not None:
      checks.append(ThresholdCheck(
          "min_value", candidate_value, self.min_value, ">=",
          math.isfinite(candidate_value) and candidate_value >= self.min_value,
          f"the candidate's {self.metric}"))
    return checks

  def check_efficiency(self, compression_ratio: Optional[float],
                       latency_ratio: Optional[float]) -> List[ThresholdCheck]:
    checks = []
    if self.min_compression_ratio is not None:
      ok = compression_ratio is not None and math.isfinite(compression_ratio)
      checks.append(ThresholdCheck(
          "min_compression_ratio", compression_ratio, self.min_compression_ratio,
          ">=", ok and compression_ratio >= self.min_compression_ratio,
          "baseline bytes / candidate bytes"))
    if self.max_latency_ratio is not None:
      ok = latency_ratio is not None and math.isfinite(latency_ratio)
      checks.append(ThresholdCheck(
          "max_latency_ratio", latency_ratio, self.max_latency_ratio, "<=",
          ok and latency_ratio <= self.max_latency_ratio,
          "candidate latency / baseline latency"))
    return checks

  def check(self, baseline: Mapping[str, float], candidate: Mapping[str, float],
            compression_ratio: Optional[float] = None,
            latency_ratio: Optional[float] = None) -> List[ThresholdCheck]:
    """Every threshold that is set, quality first."""
    checks = self.check_quality(float(baseline[self.metric]),
                                float(candidate[self.metric]))
    checks += self.check_efficiency(compression_ratio, latency_ratio)
    return checks


def verdict_sentence(checks: List[ThresholdCheck], extra_reasons=()) -> str:
  """One sentence saying why the candidate was or was not blessed."""
  failed = [c for c in checks if not c.passed]
  reasons = list(extra_reasons) + [c.sentence() for c in failed]
  if reasons:
    return "NOT BLESSED because " + "; ".join(reasons) + "."
  names = ", ".join(c.name for c in checks)
  return f"BLESSED: every threshold held ({names})."
