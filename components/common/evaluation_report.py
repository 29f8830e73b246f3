"""The CompressionEvaluator's report as frozen dataclasses, and its JSON.

One definition of what the evaluator measured and decided, read by every
consumer: the report renderer (Markdown / HTML), the ML Metadata custom
properties, the pipeline summary and the benchmarks. ``to_json`` writes the
layout ``report.json`` has always had (keys sorted, NaN as null), and
``from_json`` reads it back, so files written before keep loading.

Example:

    report = EvaluationReport.from_json(open("report.json").read())
    report.sizes.size_ratio, report.latency.candidate_us, report.verdict
"""

import dataclasses
import json
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

from tfx_compression.components.common import thresholds as thresholds_lib

_T = TypeVar("_T")


def sanitize(obj: Any) -> Any:
  """JSON-safe: NaN and infinities become null (strict JSON has neither)."""
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, dict):
    return {str(k): sanitize(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [sanitize(v) for v in obj]
  return obj


def _section(cls: Type[_T], data: Optional[Mapping[str, Any]]) -> _T:
  """``cls`` from a dict: unknown keys are ignored, missing ones take defaults."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Both models' sizes on one representation (SavedModel or TFLite)."""
  representation: str = ""
  baseline_bytes: Optional[int] = None
  candidate_bytes: Optional[int] = None
  baseline_gzip_bytes: Optional[int] = None
  candidate_gzip_bytes: Optional[int] = None
  size_ratio: Optional[float] = None       # baseline / candidate
  gzip_size_ratio: Optional[float] = None
  baseline_saved_model_bytes: Optional[int] = None
  baseline_saved_model_gzip_bytes: Optional[int] = None
  compression_measure: str = "raw"         # which ratio the gate reads
  compression_ratio: Optional[float] = None

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Latency:
  """Median seconds per example of both models, timed the same way."""
  baseline_seconds: Optional[float] = None
  candidate_seconds: Optional[float] = None
  samples: int = 0
  warmup: int = 0
  threads: int = 1
  block: int = 1
  runtime: str = ""
  latency_ratio: Optional[float] = None    # candidate / baseline

  @property
  def baseline_us(self) -> Optional[float]:
    return None if self.baseline_seconds is None else 1e6 * self.baseline_seconds

  @property
  def candidate_us(self) -> Optional[float]:
    return (None if self.candidate_seconds is None
            else 1e6 * self.candidate_seconds)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Sparsity:
  """The candidate's sparsity (recorded or measured) and the baseline's."""
  candidate: Optional[float] = None
  source: str = ""
  measured: Optional[float] = None
  baseline: Optional[float] = None

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Examples:
  """The examples evaluated and how the models' outputs were read."""
  split: str = ""
  count: int = 0
  baseline_nonfinite: int = 0
  candidate_nonfinite: int = 0
  baseline_logit_rows: int = 0
  candidate_logit_rows: int = 0
  num_classes: Optional[int] = None
  top_k: Optional[int] = None
  baseline_outputs: Optional[str] = None
  candidate_outputs: Optional[str] = None
  outputs_read: Optional[str] = None
  label_key: Optional[str] = None
  counted: Optional[int] = None
  min_examples: Optional[int] = None
  chance_accuracy: Optional[float] = None
  baseline_at_chance: bool = False

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
  """What the CompressionEvaluator measured and decided.

  ``metrics`` maps "baseline" / "candidate" to {metric name: value};
  ``models``, ``config`` and ``pruning_search`` are descriptive and kept as
  read. ``checks`` are the thresholds' outcomes, ``reasons`` the ones no
  threshold covers.
  """
  blessed: bool
  verdict: str
  thresholds: thresholds_lib.GateThresholds
  checks: Tuple[thresholds_lib.ThresholdCheck, ...]
  metrics: Mapping[str, Mapping[str, float]]
  examples: Examples
  sizes: Sizes
  latency: Latency
  sparsity: Sparsity
  reasons: Tuple[str, ...] = ()
  metric_drop: Optional[float] = None
  models: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  baseline_blessed: Optional[bool] = None
  pruning_search: Optional[Mapping[str, Any]] = None
  config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The CompressionPlanner's plan.json, when the candidate carries one.
  plan: Optional[Mapping[str, Any]] = None

  @property
  def metric(self) -> str:
    return self.thresholds.metric

  @property
  def higher_is_better(self) -> bool:
    return thresholds_lib.higher_is_better(self.metric)

  def metric_value(self, role: str, name: Optional[str] = None
                   ) -> Optional[float]:
    """``role``'s ("baseline" / "candidate") value of ``name`` (the gate's)."""
    return (self.metrics.get(role) or {}).get(name or self.metric)

  def quality_bound(self, baseline_value: Optional[float] = None
                    ) -> Optional[float]:
    """The worst gate-metric value the thresholds allow (see worst_allowed)."""
    if baseline_value is None:
      baseline_value = self.metric_value("baseline")
    return self.thresholds.worst_allowed(baseline_value)

  def to_dict(self) -> Dict[str, Any]:
    """The dict ``report.json`` holds (the keys it has always had)."""
    return {
        "blessed": self.blessed,
        "verdict": self.verdict,
        "reasons": list(self.reasons),
        "metric": self.metric,
        "higher_is_better": self.higher_is_better,
        "thresholds": self.thresholds.to_dict(),
        "checks": [c.to_dict() for c in self.checks],
        "metric_drop": self.metric_drop,
        "metrics": {k: dict(v) for k, v in self.metrics.items()},
        "examples": self.examples.to_dict(),
        "sizes": self.sizes.to_dict(),
        "latency": self.latency.to_dict(),
        "sparsity": self.sparsity.to_dict(),
        "models": dict(self.models),
        "baseline_blessed": self.baseline_blessed,
        "pruning_search": (dict(self.pruning_search) if self.pruning_search
                           else None),
        "config": dict(self.config),
        # Only when there is one: reports of other candidates keep the keys
        # they have always had.
        **({"plan": dict(self.plan)} if self.plan else {}),
    }

  def to_json(self) -> str:
    """Strict JSON (NaN -> null), keys sorted: ``report.json``."""
    return json.dumps(sanitize(self.to_dict()), indent=2, sort_keys=True,
                      default=str, allow_nan=False)

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "EvaluationReport":
    """The report from the dict :meth:`to_dict` (or ``report.json``) holds."""
    thresholds = dict(data["thresholds"])
    thresholds.setdefault("metric", data.get("metric", "accuracy"))
    return cls(
        blessed=bool(data["blessed"]),
        verdict=data["verdict"],
        thresholds=thresholds_lib.GateThresholds.from_kwargs(**thresholds),
        checks=tuple(_section(thresholds_lib.ThresholdCheck, c)
                     for c in data.get("checks") or ()),
        metrics={k: dict(v) for k, v in (data.get("metrics") or {}).items()},
        examples=_section(Examples, data.get("examples")),
        sizes=_section(Sizes, data.get("sizes")),
        latency=_section(Latency, data.get("latency")),
        sparsity=_section(Sparsity, data.get("sparsity")),
        reasons=tuple(data.get("reasons") or ()),
        metric_drop=data.get("metric_drop"),
        models=dict(data.get("models") or {}),
        baseline_blessed=data.get("baseline_blessed"),
        pruning_search=data.get("pruning_search") or None,
        config=dict(data.get("config") or {}),
        plan=data.get("plan") or None)

  @classmethod
  def from_json(cls, text: str) -> "EvaluationReport":
    """Reads ``report.json``.

    Raises:
      ValueError: ``text`` is not JSON, or not a report.
    """
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"The report is not valid JSON ({e}); re-run the "
                       "CompressionEvaluator that wrote it.") from e
    if not isinstance(data, dict) or "thresholds" not in data:
      raise ValueError("The report holds no `thresholds`: it is not a "
                       "CompressionEvaluator report.json; re-run the step.")
    return cls.from_dict(data)
