"""The CompressionEvaluator's parameters: one frozen, self-validating config.

Built in the component's constructor (bad values fail when the pipeline is
defined) and again in the executor from ``exec_properties`` (runtime
parameters), so the rules live here only. The gate itself is a
:class:`tfx_compression.components.common.thresholds.GateThresholds`, the one definition the
Pruner's search uses too.

Example:

    config = EvaluatorConfig.from_parameters(
        {"label_key": "label", "metric": "accuracy", "max_drop": 0.01,
         "min_compression_ratio": 3.0})
    config.thresholds.max_drop  # 0.01
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional

from tfx_compression.components.common import checks
from tfx_compression.components.common import thresholds as thresholds_lib

# Inputs.
BASELINE_MODEL_KEY = "baseline_model"
CANDIDATE_MODEL_KEY = "candidate_model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
TRANSFORM_GRAPH_KEY = "transform_graph"
BASELINE_BLESSING_KEY = "baseline_blessing"
# Outputs.
BLESSING_KEY = "blessing"
EVALUATION_KEY = "evaluation"
# Parameters.
LABEL_KEY_KEY = "label_key"
METRIC_KEY = "metric"
MAX_DROP_KEY = "max_drop"
MAX_RELATIVE_DROP_KEY = "max_relative_drop"
MIN_VALUE_KEY = "min_value"
MIN_COMPRESSION_RATIO_KEY = "min_compression_ratio"
MAX_LATENCY_RATIO_KEY = "max_latency_ratio"
EVAL_SPLIT_KEY = "eval_split"
BATCH_SIZE_KEY = "batch_size"
LATENCY_SAMPLES_KEY = "latency_samples"
TOP_K_KEY = "top_k"
COMPRESSION_MEASURE_KEY = "compression_measure"
MODULE_FILE_KEY = "module_file"
MIN_EXAMPLES_KEY = "min_examples"
OUTPUT_KIND_KEY = "output_kind"

COMPRESSION_MEASURES = ("raw", "gzip")
OUTPUT_KINDS = ("auto", "probabilities", "logits")
# With fewer examples one example moves accuracy by more than a point, finer
# than the usual max_drop=0.01 can resolve.
DEFAULT_MIN_EXAMPLES = 100
MAX_MIN_EXAMPLES = 10**9
MAX_BATCH_SIZE = 65536
MAX_LATENCY_SAMPLES = 100000


def _check_int(name: str, value: Any, low: int, high: int, hint: str) -> None:
  checks.check_int(name, value)
  if not low <= value <= high:
    raise ValueError(f"`{name}`={value} is outside [{low}, {high}]. {hint}")


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
  """Everything the CompressionEvaluator needs besides models and data.

  Attributes:
    thresholds: the gate (metric and limits), validated by GateThresholds.
    label_key: the label's feature name in the raw Examples.
    eval_split: the Examples split the metrics are computed on.
    batch_size: examples per prediction batch in the Beam pipeline.
    latency_samples: examples timed per model (0 skips the latency
      measurement; not allowed with ``max_latency_ratio``).
    top_k: k of ``top_k_accuracy``.
    compression_measure: which bytes ``min_compression_ratio`` compares:
      'raw' (bytes on disk, default) or 'gzip' (bytes after gzip -9, which
      is where a pruned model's zeros pay off).
    module_file: optional Python file defining ``custom_objects`` (a dict, or
      a function returning one) for models with custom Keras layers.
    min_examples: the least number of evaluated examples (with a label and
      finite predictions) to bless on; fewer gives NOT_BLESSED.
    output_kind: what the models' outputs are: 'auto' (from the baseline's
      loss and output layer, else from its outputs), 'probabilities' or
      'logits'.
  """
  thresholds: thresholds_lib.GateThresholds
  label_key: str
  eval_split: str = "eval"
  batch_size: int = 256
  latency_samples: int = 200
  top_k: int = 5
  compression_measure: str = "raw"
  module_file: Optional[str] = None
  min_examples: int = DEFAULT_MIN_EXAMPLES
  output_kind: str = "auto"

  def __post_init__(self):
    if not isinstance(self.thresholds, thresholds_lib.GateThresholds):
      raise TypeError("`thresholds` must be a GateThresholds, got "
                      f"{type(self.thresholds).__name__}.")
    checks.check_str("label_key", self.label_key)
    if not self.label_key.strip():
      raise ValueError("`label_key` is empty; name the label feature of the raw "
                       "Examples, e.g. 'label'.")
    checks.check_str("eval_split", self.eval_split)
    if not self.eval_split.strip():
      raise ValueError("`eval_split` is empty; name the Examples split to "
                       "evaluate on, e.g. 'eval'.")
    _check_int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE,
               "It is the number of examples predicted at once; 256 is usual.")
    _check_int("latency_samples", self.latency_samples, 0, MAX_LATENCY_SAMPLES,
               "It is the number of examples timed per model (0 skips timing).")
    _check_int("top_k", self.top_k, 1, 1000,
               "It is the k of top_k_accuracy, e.g. 5.")
    checks.check_str("compression_measure", self.compression_measure)
    measure = self.compression_measure.strip().lower()
    if measure not in COMPRESSION_MEASURES:
      raise ValueError(
          f"`compression_measure`={self.compression_measure!r} is not one of "
          f"{COMPRESSION_MEASURES}: 'raw' compares bytes on disk, 'gzip' bytes "
          "after gzip.")
    object.__setattr__(self, "compression_measure", measure)
    checks.check_str("module_file", self.module_file, optional=True)
    _check_int("min_examples", self.min_examples, 1, MAX_MIN_EXAMPLES,
               "It is the least number of evaluated examples to bless on; "
               f"{DEFAULT_MIN_EXAMPLES} is the default.")
    checks.check_str("output_kind", self.output_kind)
    kind = self.output_kind.strip().lower()
    if kind not in OUTPUT_KINDS:
      raise ValueError(
          f"`output_kind`={self.output_kind!r} is not one of {OUTPUT_KINDS}: "
          "'auto' reads it from the baseline's loss and output layer, "
          "'probabilities' means class probabilities (threshold 0.5 for one "
          "unit), 'logits' means logits (threshold 0).")
    object.__setattr__(self, "output_kind", kind)
    if self.latency_samples == 0 and self.thresholds.max_latency_ratio is not None:
      raise ValueError(
          f"`max_latency_ratio`={self.thresholds.max_latency_ratio} needs the "
          "latency measured, but `latency_samples`=0 turns it off. Set "
          "latency_samples >= 1 (e.g. 200) or drop max_latency_ratio.")

  @property
  def metric(self) -> str:
    return self.thresholds.metric

  def to_dict(self) -> Dict[str, Any]:
    out = dataclasses.asdict(self)
    out["thresholds"] = self.thresholds.to_dict()
    return out

  @classmethod
  def from_parameters(cls, params: Mapping[str, Any]) -> "EvaluatorConfig":
    """Builds from component parameters; None means the default.

    Threshold parameters (metric, max_drop, ...) go to GateThresholds; the
    other known keys to the config; unknown keys are ignored.

    Raises:
      TypeError, ValueError: a bad value, named in the message.
    """
    params = {k: v for k, v in params.items() if v is not None}
    gate = thresholds_lib.GateThresholds.from_kwargs(**params)
    names = {f.name for f in dataclasses.fields(cls)} - {"thresholds"}
    if "label_key" not in params:
      raise ValueError("`label_key` is required: name the label feature of "
                       "the raw Examples, e.g. label_key='label'.")
    return cls(thresholds=gate,
               **{k: v for k, v in params.items() if k in names})
