"""What a plan search produced: steps, candidates, the result, and the choice rule.

Frozen dataclasses with ``to_dict`` (``plan.json``'s layout) shared by the
planner, its executor and its tests; TFX- and TensorFlow-free.

Example:

    best = choose(candidates, "size", higher_is_better=True)
    best.raw_bytes, best.mode
"""

import dataclasses
import hashlib
import os
from typing import Any, Dict, Mapping, Optional, Tuple

OBJECTIVE_FIELDS = {"size": "raw_bytes", "gzip_size": "gzip_bytes",
                    "latency": "latency_us"}


@dataclasses.dataclass(frozen=True)
class Step:
  """One pruning step of a climb, scored as a Keras model."""
  structure: str
  sparsity: float
  metric: float
  passed: bool
  why_not: Optional[str]
  param_count: int
  nonzero_params: int
  train_steps: int
  seconds: float

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One (structure, sparsity, mode) measured as it would ship."""
  index: int
  structure: str
  sparsity: float
  mode: str
  kind: str                      # 'tflite' or 'saved_model'
  packed: bool
  metric: Optional[float]
  passed: bool
  why_not: Optional[str]
  raw_bytes: Optional[int]
  gzip_bytes: Optional[int]
  latency_us: Optional[float]
  sha256: Optional[str]
  weight_sparsity: Optional[float]
  file: Optional[str]            # local path of the measured file/directory
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d["file"] = os.path.basename(self.file) if self.file else None
    return d

  def objective_value(self, objective: str) -> Optional[float]:
    return getattr(self, OBJECTIVE_FIELDS[objective])


@dataclasses.dataclass(frozen=True)
class PlanResult:
  """Every candidate, the steps climbed, what was skipped and the choice."""
  candidates: Tuple[Candidate, ...]
  steps: Tuple[Step, ...]
  skipped: Tuple[Dict[str, str], ...]
  baseline: Dict[str, Any]
  gate: Any
  objective: str
  chosen_index: int
  ios: Mapping[int, Dict[str, Any]]  # tflite_io.json of each TFLite candidate

  @property
  def chosen(self) -> Candidate:
    return self.candidates[self.chosen_index]

  def to_dict(self) -> Dict[str, Any]:
    """What ``plan.json`` holds."""
    return {
        "objective": self.objective,
        "metric_name": self.gate.metric,
        "thresholds": self.gate.to_dict(),
        "baseline": dict(self.baseline),
        "chosen_index": self.chosen_index,
        "chosen": self.chosen.to_dict(),
        "candidates": [c.to_dict() for c in self.candidates],
        "steps": [s.to_dict() for s in self.steps],
        "skipped": [dict(s) for s in self.skipped],
    }

  def properties(self) -> Dict[str, Any]:
    """Custom properties of the output Model (ML Metadata)."""
    c = self.chosen
    props = {
        "plan_structure": c.structure, "plan_sparsity": c.sparsity,
        "plan_mode": c.mode, "plan_packed": int(c.packed),
        "plan_objective": self.objective,
        "plan_candidates": len(self.candidates),
        "plan_passing_candidates": sum(x.passed for x in self.candidates),
        "plan_steps_tried": len(self.steps),
        "plan_skipped": ",".join(s["structure"] for s in self.skipped),
        "plan_metric": self.gate.metric, "plan_chosen_metric": c.metric,
        "plan_baseline_metric": self.baseline["metric"],
        "plan_raw_bytes": c.raw_bytes, "plan_gzip_bytes": c.gzip_bytes,
        "plan_latency_us": c.latency_us, "plan_sha256": c.sha256,
        "quantization": c.mode, "sparsity_structure": c.structure,
        "sparsity": c.weight_sparsity,
    }
    if c.kind == "tflite":
      props.update(tflite_bytes=c.raw_bytes, tflite_gzip_bytes=c.gzip_bytes,
                   float_tflite_bytes=self.baseline.get("float_tflite_bytes"))
    return props


def choose(candidates, objective: str, higher_is_better: bool
           ) -> Optional[Candidate]:
  """The best passing candidate by ``objective``; ties go to the better metric,
  then to the earlier candidate. None when none passed."""
  passing = [c for c in candidates
             if c.passed and c.objective_value(objective) is not None]
  if not passing:
    return None
  sign = -1.0 if higher_is_better else 1.0
  return min(passing, key=lambda c: (c.objective_value(objective),
                                     sign * c.metric, c.index))


def digest(path: str) -> str:
  """SHA-256 of a file, or of a directory's files (relative names and bytes)."""
  h = hashlib.sha256()
  if os.path.isfile(path):
    with open(path, "rb") as f:
      h.update(f.read())
    return h.hexdigest()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      h.update(os.path.relpath(full, path).encode() + b"\0")
      with open(full, "rb") as f:
        h.update(f.read())
  return h.hexdigest()
