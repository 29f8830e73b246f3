"""The CompressionEvaluator's TFX-free core: predictions -> metrics -> decision.

Three layers, each usable and tested on its own:

* **Metrics from sufficient statistics** (in components/common/metrics.py, shared
  with the Pruner's search). :func:`batch_stats` turns one batch of
  model outputs and labels into a :class:`MetricStats` (confusion matrix,
  crossentropy sum, top-k hits, per-class score histograms); stats of batches
  add up with :meth:`MetricStats.merge`, and :func:`metrics_from_stats` reads
  accuracy, precision, recall, F1 (macro; class 1 for binary models), AUC
  (one-vs-rest macro), top-k accuracy and crossentropy off the total. Memory
  is fixed by the number of classes, never by the number of examples, and
  every field is an integer, so the totals are identical whatever the order
  in which a runner adds the batches.
* **The decision.** :func:`decide` applies the shared GateThresholds and the
  reasons no threshold covers (NaN predictions, an unblessed baseline).
* **Measuring models.** :func:`compute_stats` is the Beam pipeline (read the
  eval split, batch, predict with both models loaded once per worker, combine
  the stats); :func:`measure_latency` times both models the same way;
  :func:`evaluate` ties it all together into the report's data.

Example:

    stats = batch_stats(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    metrics_from_stats(stats)["accuracy"]  # 0.5
"""

import collections
import dataclasses
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import model_io
from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.common import tflite_runtime
from tfx_compression.components.quantizer import packing

from tfx_compression.components.common.metrics import AUC_BINS, EPSILON, XENT_UNITS_PER_NAT  # noqa: F401
LATENCY_WARMUP = 10
# Examples each TFLite model runs in a row before the other takes its turn.
LATENCY_BLOCK = 20
ROLES = ("baseline", "candidate")


# The models or the data cannot be compared; no blessing is written. One class
# with the shared metrics' error, so callers catch either name.
EvaluationError = metrics_lib.MetricsError


from tfx_compression.components.common.metrics import (  # noqa: E402,F401  (re-exported)
    _probability_rows,
    _as_2d,
    detect_output_kind,
    to_probabilities,
    _class_ids,
    MetricStats,
    batch_stats,
    auc_from_histograms,
    metrics_from_stats,
    PROBABILITIES,
    LOGITS)


# ---------------------------------------------------------------------------
# Metrics + thresholds -> decision.
# ---------------------------------------------------------------------------

BASELINE_NOT_BLESSED = "the baseline model was not blessed"


@dataclasses.dataclass(frozen=True)
class Decision:
  """The gate's outcome: blessed or not, every check, and one sentence why."""
  blessed: bool
  checks: Tuple[thresholds_lib.ThresholdCheck, ...]
  reasons: Tuple[str, ...]  # reasons outside the thresholds
  verdict: str

  def to_dict(self) -> Dict[str, Any]:
    return {"blessed": self.blessed, "verdict": self.verdict,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks]}


def decide(gate: thresholds_lib.GateThresholds,
           baseline_metrics: Mapping[str, float],
           candidate_metrics: Mapping[str, float],
           compression_ratio: Optional[float] = None,
           latency_ratio: Optional[float] = None,
           *,
           baseline_nonfinite: int = 0,
           candidate_nonfinite: int = 0,
           examples: Optional[int] = None,
           baseline_blessed: Optional[bool] = None,
           baseline_blessing_problem: Optional[str] = None,
           counted: Optional[int] = None,
           min_examples: int = 0,
           chance_accuracy: Optional[float] = None) -> Decision:
  """Blessed only if every threshold holds and nothing else is wrong.

  Args:
    gate: the thresholds.
    baseline_metrics, candidate_metrics: metric name -> value.
    compression_ratio: baseline bytes / candidate bytes (None: not measured).
    latency_ratio: candidate latency / baseline latency (None: not measured).
    baseline_nonfinite, candidate_nonfinite: predictions that were NaN or
      infinite; any makes the candidate NOT_BLESSED.
    examples: examples evaluated, for the reasons' wording.
    baseline_blessed: the blessing of an upstream validation of the baseline,
      if one was wired; False makes the candidate NOT_BLESSED.
    baseline_blessing_problem: why the wired ``baseline_blessing`` cannot be
      trusted (absent, or the blessing of another model); NOT_BLESSED.
    counted: examples that entered the metrics; fewer than ``min_examples``
      makes the candidate NOT_BLESSED (too little evidence).
    min_examples: the least number of counted examples to decide on.
    chance_accuracy: the accuracy of always predicting the most frequent
      class; a baseline no better than that makes the candidate NOT_BLESSED
      (matching a model that learned nothing proves nothing).

  Example:

      gate = GateThresholds(max_drop=0.01)
      decide(gate, {"accuracy": 0.95}, {"accuracy": 0.90}).blessed  # False
  """
  reasons = []
  if baseline_blessing_problem:
    reasons.append(baseline_blessing_problem)
  elif baseline_blessed is False:
    reasons.append(BASELINE_NOT_BLESSED)
  if counted is not None and counted < min_examples:
    reasons.append(
        f"only {counted} example(s) were evaluated, fewer than "
        f"`min_examples`={min_examples}: too few to tell the models apart "
        "(use a larger eval split)")
  base_accuracy = baseline_metrics.get("accuracy")
  if (chance_accuracy is not None and base_accuracy is not None
      and math.isfinite(base_accuracy) and base_accuracy <= chance_accuracy):
    reasons.append(
        f"the baseline itself is at chance level (accuracy "
        f"{base_accuracy:.4f}, no better than always predicting its most "
        f"frequent class: {chance_accuracy:.4f}), so matching it proves "
        "nothing")
  of = f" of {examples}" if examples else ""
  if candidate_nonfinite:
    reasons.append(f"{candidate_nonfinite}{of} candidate predictions were NaN "
                   "or infinite")
  if baseline_nonfinite:
    reasons.append(f"{baseline_nonfinite}{of} baseline predictions were NaN or "
                   "infinite, so the comparison is not meaningful")
  checks = tuple(gate.check(baseline_metrics, candidate_metrics,
                            compression_ratio, latency_ratio))
  blessed = not reasons and all(c.passed for c in checks)
  return Decision(blessed=blessed, checks=checks, reasons=tuple(reasons),
                  verdict=thresholds_lib.verdict_sentence(list(checks), reasons))


# ---------------------------------------------------------------------------
# Models: loading, predicting, converting, sizes.
# ---------------------------------------------------------------------------


def load_custom_objects(module_file: Optional[str]) -> Optional[Dict[str, Any]]:
  """``custom_objects`` from a user module (a dict, or a function returning one)."""
  if not module_file:
    return None
  spec = importlib.util.spec_from_file_location("user_module", module_file)
  if spec is None or spec.loader is None:
    raise EvaluationError(f"`module_file`={module_file!r} is not a Python file "
                          "that can be imported.")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except (ImportError, OSError) as e:
    raise EvaluationError(f"`module_file`={module_file!r} could not be "
                          f"imported: {e}. Give the path of a Python file "
                          "the step can read.") from e
  objects = getattr(module, "custom_objects", None)
  if callable(objects):
    objects = objects()
  if objects is not None and not isinstance(objects, dict):
    raise EvaluationError(
        f"`module_file`={module_file!r} defines `custom_objects` as "
        f"{type(objects).__name__}; it must be a dict (or a function returning "
        "one) of name -> Keras class or function.")
  return objects


def _single_output(out: Any, what: str) -> Any:
  if isinstance(out, dict):
    if len(out) != 1:
      raise EvaluationError(
          f"The {what} has {len(out)} outputs {sorted(out)}; the evaluator "
          "needs one output of class scores.")
    return next(iter(out.values()))
  if isinstance(out, (list, tuple)):
    if len(out) != 1:
      raise EvaluationError(f"The {what} has {len(out)} outputs; the evaluator "
                            "needs one output of class scores.")
    return out[0]
  return out


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where a model is and how to load it; picklable, loaded in each worker."""
  role: str            # 'baseline' or 'candidate' (used in messages)
  kind: str            # 'keras' or 'tflite'
  path: str            # the SavedModel directory or the .tflite file
  module_file: Optional[str] = None
  io: Optional[Dict[str, Any]] = None   # tflite_io.json, when written

  def load(self):
    if self.kind == "tflite":
      return TFLitePredictor(self.path, io=self.io, role=self.role)
    model = model_io.load_keras_model(self.path, f"{self.role}_model",
                                      load_custom_objects(self.module_file))
    return KerasPredictor(model, role=self.role)


class KerasPredictor:
  """Batched predictions of a tf_keras model fed by feature name."""

  def __init__(self, model, role: str = "model"):
    self.model = model
    self.role = role
    self.input_specs = features_lib.keras_input_specs(model)
    self.input_names = list(self.input_specs)
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) > 1:
      names = getattr(model, "output_names", None) or [
          t.name.split("/")[0] for t in outputs]
      raise EvaluationError(
          f"`{role}_model` has {len(outputs)} outputs {list(names)}; the "
          "evaluator gates a model with one output of class scores. Export "
          "a model with that one output.")
    shape = model.output_shape
    if isinstance(shape, dict):
      shape = list(shape.values())
    if isinstance(shape, list):
      shape = shape[0] if len(shape) == 1 else None
    self.num_outputs = int(shape[-1]) if shape and shape[-1] else None

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    inputs = {name: features[name] for name in self.input_names}
    out = _single_output(self.model(inputs, training=False),
                         f"{self.role} model")
    return np.asarray(out)


# Losses that say a model predicts numbers, not classes.
REGRESSION_LOSSES = frozenset({
    "mean_squared_error", "mse", "meansquarederror",
    "mean_absolute_error", "mae", "meanabsoluteerror",
    "mean_absolute_percentage_error", "mape", "meanabsolutepercentageerror",
    "mean_squared_logarithmic_error", "msle", "meansquaredlogarithmicerror",
    "huber", "huber_loss", "log_cosh", "logcosh", "poisson",
    "cosine_similarity", "cosinesimilarity"})
OUTPUT_KIND_AUTO = "auto"


def _saved_loss(model) -> Tuple[Optional[str], Optional[bool]]:
  """(loss name, from_logits) the model was compiled with, as far as recorded.

  From the compiled loss, else the training config a SavedModel keeps (a
  model loaded with compile=False still has it). (None, None) when unknown.
  """
  loss = getattr(model, "loss", None)
  if loss is None:
    attributes = getattr(model, "_serialized_attributes", None) or {}
    config = (attributes.get("metadata") or {}).get("training_config") or {}
    loss = config.get("loss")
  if isinstance(loss, (list, tuple)) and len(loss) == 1:
    loss = loss[0]
  if isinstance(loss, dict) and "class_name" not in loss and len(loss) == 1:
    loss = next(iter(loss.values()))
  if loss is None:
    return None, None
  if isinstance(loss, str):
    # A loss given by name has Keras' defaults: from_logits=False.
    name = loss.lower()
    return name, (False if "crossentropy" in name else None)
  if isinstance(loss, dict):
    cfg = loss.get("config") or {}
    name = cfg.get("name") or loss.get("class_name") or ""
    if isinstance(cfg.get("fn"), str):
      name = cfg["fn"]
    return str(name).lower(), cfg.get("from_logits")
  get_config = getattr(loss, "get_config", None)
  cfg = get_config() if callable(get_config) else {}
  name = (cfg.get("name") or getattr(loss, "__name__", None)
          or type(loss).__name__)
  return str(name).lower(), cfg.get("from_logits")


def _output_activation(model) -> Optional[str]:
  """The name of the activation of the layer that makes the model's output."""
  try:
    layer = model.outputs[0]._keras_history.layer  # pylint: disable=protected-access
  except (AttributeError, IndexError, TypeError):
    layers = getattr(model, "layers", None) or []
    layer = layers[-1] if layers else None
  if layer is None:
    return None
  kind = type(layer).__name__.lower()
  if kind in ("softmax", "sigmoid"):
    return kind
  activation = getattr(layer, "activation", None)
  name = getattr(activation, "__name__", None) or (
      activation if isinstance(activation, str) else None)
  return name.lower() if name else None


def output_kind_from_model(model, units: Optional[int],
                           parameter: str = "baseline_model") -> Optional[str]:
  """What a Keras classifier's outputs are, from its loss and output layer.

  Returns 'probabilities' (softmax/sigmoid output, or a cross-entropy loss
  with from_logits=False), 'logits' (a loss with from_logits=True), or None
  when only the outputs can tell (several units, nothing recorded).

  Raises:
    EvaluationError: the model was trained with a regression loss, or it has
      one linear output unit and no recorded loss (a logit and a score read
      differently: 0 and 0.5 are the thresholds); the message names
      ``output_kind``, which settles it.

  Example:

      output_kind_from_model(model_with_softmax_head, 10)  # 'probabilities'
  """
  loss, from_logits = _saved_loss(model)
  activation = _output_activation(model)
  hint = ("If its outputs are class scores, say which with `output_kind`="
          "'probabilities' (P(class), threshold 0.5) or 'logits' (threshold 0).")
  if loss in REGRESSION_LOSSES:
    raise EvaluationError(
        f"`{parameter}` was trained with the regression loss {loss!r}: its "
        "outputs are numbers, not class scores, so accuracy and the other "
        f"gate metrics mean nothing on them. {hint}")
  if activation in ("softmax", "sigmoid"):
    return metrics_lib.PROBABILITIES
  if from_logits is True:
    return metrics_lib.LOGITS
  if from_logits is False and loss and "crossentropy" in loss.replace("_", ""):
    return metrics_lib.PROBABILITIES
  if units == 1:
    raise EvaluationError(
        f"`{parameter}` has one linear output unit and no recorded loss, so "
        f"whether it outputs a logit or a probability cannot be told. {hint}")
  return None


def _normalize_tensor_name(name: str) -> str:
  name = name.split(":")[0]
  for prefix in ("serving_default_",):
    if name.startswith(prefix):
      name = name[len(prefix):]
  return name


class TFLitePredictor:
  """A TFLite model fed one example at a time by feature name, single-threaded.

  Inputs are matched by the name in the model's signature (the Keras input
  names, for a model converted from a concrete function over named inputs),
  else by tensor name. Integer (quantized) inputs are quantized and outputs
  dequantized with the tensor's scale and zero point. The batch dimension of
  converted models is usually fixed to 1, so a batch is fed row by row.
  """

  def __init__(self, path: Optional[str] = None, io: Optional[Mapping] = None,
               role: str = "model", model_content: Optional[bytes] = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.role = role
    self.io = dict(io or {})
    if model_content is None:
      # Read through gfile, so a model on remote storage (gs://) loads too.
      with tf.io.gfile.GFile(path, "rb") as f:
        model_content = f.read()
    self.content = model_content
    try:
      self.interpreter = tflite_runtime.make_interpreter(
          model_content=model_content, num_threads=1)
    except (ValueError, RuntimeError) as e:
      raise model_io.ModelLoadError(
          f"`{role}_model` at {path} is not a readable TFLite model: {e}. "
          "Re-run the step that wrote it (the Quantizer), or wire a model "
          "the TFLite converter wrote.") from e
    it = self.interpreter
    it.allocate_tensors()
    main_inputs = {d["index"] for d in it.get_input_details()}
    inputs = outputs = None
    sigs = it.get_signature_list()
    if sigs:
      key = self.io.get("signature_key")
      if key not in sigs:
        key = "serving_default" if "serving_default" in sigs else sorted(sigs)[0]
      runner = it.get_signature_runner(key)
      sig_in, sig_out = runner.get_input_details(), runner.get_output_details()
      # Indices of the signature are those of the main subgraph when the
      # signature is the main graph; only then can set_tensor use them.
      if {d["index"] for d in sig_in.values()} == main_inputs:
        inputs, outputs = dict(sig_in), dict(sig_out)
    if inputs is None:
      details = it.get_input_details()
      names = [_normalize_tensor_name(d["name"]) for d in details]
      io_names = [i.get("name") for i in self.io.get("inputs", [])]
      if io_names and len(io_names) == len(names) and set(names) - set(io_names):
        names = io_names  # written in the interpreter's input order
      inputs = dict(zip(names, details))
      outputs = {_normalize_tensor_name(d["name"]): d
                 for d in it.get_output_details()}
    self.inputs = collections.OrderedDict(sorted(inputs.items()))
    self.input_names = list(self.inputs)
    # A Quantizer model with pack_inputs=1 takes the features side by side in
    # one tensor, in the order tflite_io.json records.
    self.packed = self.io.get("packed") or None
    if self.packed:
      if self.packed.get("input") not in self.inputs:
        raise EvaluationError(
            f"The {role} TFLite model's tflite_io.json says its features are "
            f"packed into input {self.packed.get('input')!r}, but its inputs "
            f"are {self.input_names}. Re-run the Quantizer that wrote it.")
      self.input_names = list(self.packed["features"])
    if len(outputs) != 1:
      raise EvaluationError(
          f"The {role} TFLite model has {len(outputs)} outputs "
          f"{sorted(outputs)}; the evaluator needs one output of class scores.")
    self.output_name, self.output = next(iter(outputs.items()))
    self.num_outputs = int(self.output["shape"][-1]) if len(
        self.output["shape"]) else 1

  def set_inputs(self, row: Mapping[str, np.ndarray]) -> None:
    """Sets one example's inputs (each value has a leading batch of 1)."""
    if self.packed:
      d = self.inputs[self.packed["input"]]
      value = packing.pack(row, self.packed)
      self.interpreter.set_tensor(
          d["index"], _quantize(value.reshape(tuple(d["shape"])), d))
      return
    for name, d in self.inputs.items():
      value = np.asarray(row[name])
      shape = tuple(int(s) for s in d["shape"])
      if value.size != int(np.prod(shape)):
        raise EvaluationError(
            f"The {self.role} TFLite input {name!r} has shape {list(shape)} but "
            f"the feature has {value.size} value(s) per example "
            f"(shape {list(value.shape)}).")
      self.interpreter.set_tensor(d["index"], _quantize(value.reshape(shape), d))

  def invoke(self) -> None:
    self.interpreter.invoke()

  def read_output(self) -> np.ndarray:
    value = self.interpreter.get_tensor(self.output["index"])
    return _dequantize(value, self.output)

  def predict(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(features.values())))
    rows = []
    for i in range(n):
      self.set_inputs({k: features[k][i:i + 1] for k in self.input_names})
      self.invoke()
      rows.append(self.read_output().reshape(1, -1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 1))


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
  dtype = np.dtype(detail["dtype"])
  scale, zero_point = detail.get("quantization", (0.0, 0))
  if dtype.kind in "iu" and scale:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)
  return np.asarray(x).astype(dtype)


def _dequantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
  scale, zero_point = detail.get("quantization", (0.0, 0))
  if np.dtype(detail["dtype"]).kind in "iu" and scale:
    return (x.astype(np.float64) - zero_point) * scale
  return x.astype(np.float64)


def keras_to_float_tflite(model) -> bytes:
  """A float32 TFLite flatbuffer of a tf_keras model, batch fixed to 1.

  The Quantizer's own float conversion (a concrete function over the model's
  named inputs with batch-1 TensorSpecs), so a quantized candidate and this
  float baseline run in the same runtime on the same graph shape (a None
  batch keeps XNNPACK from taking Reshape-heavy graphs whole).

  Example:

      flatbuffer = keras_to_float_tflite(model)
      tf.lite.Interpreter(model_content=flatbuffer)
  """
  from tfx_compression.components.quantizer import quantization  # pylint: disable=g-import-not-at-top
  return quantization.convert(model, "float")


def tflite_sparsity(content: bytes) -> float:
  """Share of zeros in a TFLite model's Conv/FullyConnected weights (the
  Quantizer's measure: zero-point aware, through DEQUANTIZE ops)."""
  from tfx_compression.components.quantizer import quantization  # pylint: disable=g-import-not-at-top
  return quantization.tflite_weight_sparsity(content)["sparsity"]


def saved_model_sizes(path: str) -> Tuple[int, int]:
  """(bytes on disk, gzip bytes) of a SavedModel directory."""
  return model_stats.dir_bytes(path), model_stats.gzip_file_bytes(path)


def tflite_sizes(content: bytes) -> Tuple[int, int]:
  return len(content), model_stats.gzip_bytes(content)


# ---------------------------------------------------------------------------
# The Beam pipeline: eval split -> per-batch stats -> totals.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """What a worker needs to build the ExampleDecoder (picklable)."""
  schema: Any
  label_key: str
  inputs: Tuple[Tuple[str, Tuple[Optional[int], ...], str], ...]
  transform_dir: Optional[str] = None

  @classmethod
  def from_specs(cls, schema, label_key, input_specs, transform_dir=None):
    inputs = tuple((name, tuple(s.shape.as_list()), s.dtype.name)
                   for name, s in input_specs.items())
    return cls(schema, label_key, inputs, transform_dir)

  def build(self) -> features_lib.ExampleDecoder:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    specs = collections.OrderedDict(
        (name, tf.TensorSpec(shape, tf.as_dtype(dtype), name=name))
        for name, shape, dtype in self.inputs)
    return features_lib.ExampleDecoder(self.schema, self.label_key, specs,
                                       self.transform_dir)


class _LoadedModels:
  """The decoder and both predictors of one worker (weak-referenceable)."""

  def __init__(self, decoder_spec: DecoderSpec,
               sources: Mapping[str, ModelSource]):
    self.decoder = decoder_spec.build()
    self.predictors = {role: src.load() for role, src in sources.items()}


def _stats_dofn_class():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class StatsDoFn(beam.DoFn):
    """Decodes a batch of serialized examples, predicts with every model."""

    def __init__(self, shared_handle, decoder_spec, sources, top_k,
                 output_kinds):
      self._shared = shared_handle
      self._decoder_spec = decoder_spec
      self._sources = dict(sources)
      self._top_k = top_k
      self._kinds = dict(output_kinds or {})
      self._models = None

    def setup(self):
      # Loaded once per worker process, shared by the DoFn instances in it.
      self._models = self._shared.acquire(
          lambda: _LoadedModels(self._decoder_spec, self._sources))

    def process(self, batch):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      features, labels, present = self._models.decoder.decode_with_presence(
          tf.constant(list(batch), dtype=tf.string))
      features = {k: v.numpy() for k, v in features.items()}
      labels, present = labels.numpy(), present.numpy()
      yield {role: batch_stats(p.predict(features), labels, self._top_k,
                               self._kinds.get(role), present)
             for role, p in self._models.predictors.items()}

  return StatsDoFn


def _merge_combine_fn():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class MergeStats(beam.CombineFn):
    """Adds per-batch {role: MetricStats}; integer sums, order-independent."""

    def create_accumulator(self):
      return {}

    def add_input(self, acc, element):
      return self.merge_accumulators([acc, element])

    def merge_accumulators(self, accumulators):
      out = {}
      for acc in accumulators:
        for role, stats in acc.items():
          out[role] = stats if role not in out else out[role].merge(stats)
      return out

    def extract_output(self, acc):
      return acc

  return MergeStats()


def _to_json(stats: Mapping[str, MetricStats]) -> str:
  return json.dumps({role: s.to_dict() for role, s in stats.items()})


def compute_stats(pipeline, file_patterns: Sequence[str],
                  decoder_spec: DecoderSpec,
                  sources: Mapping[str, ModelSource], batch_size: int,
                  top_k: int, work_dir: str,
                  output_kinds: Optional[Mapping[str, str]] = None
                  ) -> Dict[str, MetricStats]:
  """Runs the Beam pipeline over the eval split; {role: total MetricStats}.

  TFRecords -> BatchElements(batch_size) -> a DoFn that loads every model once
  per worker and emits each batch's stats -> CombineGlobally(sum). Memory per
  worker is one batch plus the fixed-size statistics.

  Args:
    pipeline: a beam.Pipeline (the executor's, so beam_pipeline_args apply).
    file_patterns: the eval split's TFRecord file patterns (gzip detected).
    decoder_spec: how to decode examples into the models' features.
    sources: {role: ModelSource}.
    batch_size: examples per prediction batch.
    top_k: k of top-k accuracy.
    work_dir: a local or remote directory for the one-line result file.
    output_kinds: {role: 'probabilities' | 'logits'}; a role left out is
      decided per row.

  Returns:
    {role: MetricStats}; empty when the split held no example.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.utils import shared  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  out_path = os.path.join(work_dir, "metric_stats.json")
  with pipeline as p:
    reads = [p | f"Read[{i}]" >> beam.io.ReadFromTFRecord(pattern)
             for i, pattern in enumerate(file_patterns)]
    records = reads[0] if len(reads) == 1 else reads | beam.Flatten()
    _ = (records
         | "Batch" >> beam.BatchElements(min_batch_size=batch_size,
                                         max_batch_size=batch_size)
         | "Predict" >> beam.ParDo(_stats_dofn_class()(
             shared.Shared(), decoder_spec, sources, top_k, output_kinds))
         | "Sum" >> beam.CombineGlobally(_merge_combine_fn())
         | "ToJson" >> beam.Map(_to_json)
         | "Write" >> beam.io.WriteToText(out_path, shard_name_template="",
                                          num_shards=1))
  with tf.io.gfile.GFile(out_path) as f:
    payload = json.loads(f.read().strip() or "{}")
  return {role: MetricStats.from_dict(d) for role, d in payload.items()}


# ---------------------------------------------------------------------------
# Latency: median per-example time, one thread, after warm-up.
# ---------------------------------------------------------------------------


def _rows(features: Mapping[str, np.ndarray]) -> List[Dict[str, np.ndarray]]:
  n = len(next(iter(features.values())))
  return [{k: v[i:i + 1] for k, v in features.items()} for i in range(n)]


def tflite_latency(predictors: Mapping[str, TFLitePredictor],
                   features: Mapping[str, np.ndarray],
                   warmup: int = LATENCY_WARMUP,
                   block: int = LATENCY_BLOCK) -> Dict[str, float]:
  """Median seconds of one ``invoke`` per example, for each TFLite model.

  Interpreters run with one thread; inputs are set before the clock starts.
  The models take turns every ``block`` examples, so a burst of load on a
  shared machine hits both alike, while each runs as a served model does,
  one call after another: alternating on every example made a small model
  wait on the caches the large one had just emptied (the demo's narrow int8
  model measured 8.4 us that way, 2.7 us in a row).
  """
  rows = _rows(features)
  total = warmup + len(rows)
  block = max(1, block)
  times = {role: [] for role in predictors}
  for first in range(0, total, block):
    for role, pred in predictors.items():
      for i in range(first, min(first + block, total)):
        pred.set_inputs(rows[i % len(rows)])
        start = time.perf_counter()
        pred.invoke()
        elapsed = time.perf_counter() - start
        if i >= warmup:
          times[role].append(elapsed)
  return {role: statistics.median(t) for role, t in times.items()}


def _keras_latency_worker(paths: Mapping[str, str], module_file: Optional[str],
                          features: Mapping[str, np.ndarray],
                          warmup: int) -> Dict[str, Any]:
  """Times batch-1 calls of Keras models; runs in a fresh process (see
  keras_latency), where TensorFlow can still be limited to one thread."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError as e:  # already initialized: record it, do not hide it
    logging.warning("Could not limit TensorFlow to one thread: %s", e)
  custom_objects = load_custom_objects(module_file)
  calls, inputs = {}, {}
  for role, path in paths.items():
    model = model_io.load_keras_model(path, f"{role}_model", custom_objects)
    specs = {name: tf.TensorSpec([1] + list(s.shape)[1:], s.dtype, name=name)
             for name, s in features_lib.keras_input_specs(model).items()}
    # autograph=False: converting the Keras call graph costs ~10 s on the
    # first trace in a process and changes nothing for a Keras model.
    calls[role] = tf.function(lambda x, m=model: m(x, training=False),
                              input_signature=[specs], autograph=False)
    # Tensors are made before the clock starts, as TFLite inputs are set.
    inputs[role] = [{k: tf.constant(row[k], dtype=spec.dtype)
                     for k, spec in specs.items()}
                    for row in _rows(features)]
  n = len(next(iter(inputs.values())))
  times = {role: [] for role in calls}
  for i in range(warmup + n):
    for role, call in calls.items():
      x = inputs[role][i % n]
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), call(x))
      elapsed = time.perf_counter() - start
      if i >= warmup:
        times[role].append(elapsed)
  return {"latency": {role: statistics.median(t) for role, t in times.items()},
          "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def _latency_main(args_path: str) -> None:
  """Entry point of the latency subprocess: arguments and result as files."""
  with open(args_path) as f:
    args = json.load(f)
  with np.load(args["features"]) as data:
    features = {k: data[k] for k in data.files}
  result = _keras_latency_worker(args["paths"], args["module_file"], features,
                                 args["warmup"])
  with open(args["out"], "w") as f:
    json.dump(result, f)


def keras_latency(paths: Mapping[str, str], features: Mapping[str, np.ndarray],
                  module_file: Optional[str] = None,
                  warmup: int = LATENCY_WARMUP,
                  timeout: float = 1800) -> Tuple[Dict[str, float], int]:
  """Median seconds of one batch-1 call per example, each Keras SavedModel.

  TensorFlow's thread pools can be limited to one thread only before it first
  runs an op, which a pipeline process (or a test) has long done; so the
  models are timed in a fresh Python process (a plain subprocess, which does
  not re-import the caller's main module as multiprocessing would), taking
  turns on each example. Returns ({role: seconds}, intra-op threads).
  """
  from tfx_compression import components  # pylint: disable=g-import-not-at-top
  components_dir = os.path.dirname(os.path.abspath(components.__file__))
  with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
    np.savez(os.path.join(tmp, "features.npz"),
             **{k: np.asarray(v) for k, v in features.items()})
    args = {"paths": dict(paths), "module_file": module_file, "warmup": warmup,
            "features": os.path.join(tmp, "features.npz"),
            "out": os.path.join(tmp, "result.json")}
    with open(os.path.join(tmp, "args.json"), "w") as f:
      json.dump(args, f)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    # The child needs this module and components.common only. Registering
    # the packages without running their __init__ (which imports the TFX
    # components) saves seconds of imports per evaluation.
    code = ("import sys, types; top = types.ModuleType('tfx_compression'); "
            "top.__path__ = []; pkg = types.ModuleType("
            "'tfx_compression.components'); pkg.__path__ = [sys.argv[2]]; "
            "sys.modules['tfx_compression'] = top; "
            "sys.modules['tfx_compression.components'] = pkg; "
            "from tfx_compression.components.compression_evaluator import "
            "evaluation; evaluation._latency_main(sys.argv[1])")
    proc = subprocess.run(
        [sys.executable, "-c", code, os.path.join(tmp, "args.json"),
         components_dir],
        env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
      raise EvaluationError(
          "Timing the Keras models in a subprocess failed (exit code "
          f"{proc.returncode}): {proc.stderr[-2000:]}")
    with open(args["out"]) as f:
      result = json.load(f)
  return result["latency"], result["threads"]


# ---------------------------------------------------------------------------
# Everything together.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
  decision: Decision
  report: Dict[str, Any]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
  if a is None or b is None or not b:
    return None
  return float(a) / float(b)


def _check_inputs(baseline: KerasPredictor, candidate) -> None:
  extra = [n for n in candidate.input_names if n not in baseline.input_specs]
  if extra:
    raise EvaluationError(
        f"The candidate model's inputs {extra} are not inputs of the baseline "
        f"model (baseline inputs: {baseline.input_names}). Both models must "
        "take the same features: wire a candidate compressed from this "
        "baseline.")
  if (baseline.num_outputs and candidate.num_outputs
      and max(baseline.num_outputs, 2) != max(candidate.num_outputs, 2)):
    raise EvaluationError(
        f"The candidate model outputs {candidate.num_outputs} class score(s) "
        f"and the baseline {baseline.num_outputs}; they must predict the same "
        "classes.")


def _first_features(decoder, file_patterns, split, n) -> Dict[str, np.ndarray]:
  """The decoded features of the split's first ``n`` examples.

  Decoded eagerly, so an example that does not fit the schema fails here
  with a DataError naming the feature, before Beam starts.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = features_lib.list_files(file_patterns, split)
  ds = tf.data.TFRecordDataset(
      files, compression_type=features_lib.compression_type(files))
  serialized = next(iter(ds.take(n).batch(n)))
  features, _, _ = decoder.decode_with_presence(serialized)
  return {k: v.numpy() for k, v in features.items()}


def _check_top_k(config, num_classes: Optional[int]) -> None:
  """top_k_accuracy with k >= the number of classes passes any model."""
  if config.metric != "top_k_accuracy" or not num_classes:
    return
  classes = max(int(num_classes), 2)
  if config.top_k >= classes:
    raise EvaluationError(
        f"`top_k`={config.top_k} is not below the model's {classes} classes: "
        "every class is in the top k, so top_k_accuracy is 1.0 for any model. "
        f"Use top_k < {classes}, or metric='accuracy'.")


def _output_kinds(config, baseline, candidate, probe) -> Tuple[Dict[str, str], str]:
  """({role: 'probabilities' | 'logits'}, how it was decided).

  Said by ``output_kind``, else read off the baseline's loss and output layer
  (the candidate was compressed from it: its outputs mean the same), else
  decided per model on the first examples.
  """
  if config.output_kind != OUTPUT_KIND_AUTO:
    return ({role: config.output_kind for role in ROLES},
            "set by `output_kind`")
  kind = output_kind_from_model(baseline.model, baseline.num_outputs)
  if kind is not None:
    return ({role: kind for role in ROLES},
            "read from the baseline's loss and output layer")
  return ({"baseline": detect_output_kind(baseline.predict(probe)),
           "candidate": detect_output_kind(candidate.predict(probe))},
          "read from the outputs on the first examples")


def chance_accuracy(stats: MetricStats) -> Optional[float]:
  """The accuracy of always predicting the most frequent class of the labels."""
  if not stats.count:
    return None
  return float(stats.confusion.sum(axis=1).max() / stats.count)


def evaluate(*, pipeline, config, baseline_path: str, candidate_path: str,
             file_patterns: Sequence[str], schema=None,
             transform_dir: Optional[str] = None,
             candidate_io: Optional[Mapping[str, Any]] = None,
             candidate_sparsity: Optional[float] = None,
             baseline_blessed: Optional[bool] = None,
             baseline_blessing_problem: Optional[str] = None,
             pruning_search: Optional[Mapping[str, Any]] = None,
             work_dir: str) -> EvaluationResult:
  """Measures the candidate against the baseline and decides.

  Args:
    pipeline: a beam.Pipeline for the metrics (run once, here).
    config: an EvaluatorConfig.
    baseline_path: the baseline's Keras SavedModel directory.
    candidate_path: the candidate's Keras SavedModel directory, or a directory
      holding model.tflite (or the .tflite file).
    file_patterns: the eval split's TFRecord file patterns.
    schema: the Schema proto (needed unless ``transform_dir`` is given).
    transform_dir: a TransformGraph directory: both models are fed the
      transformed features.
    candidate_io: the Quantizer's tflite_io.json, if any.
    candidate_sparsity: the candidate's sparsity as its producer recorded it;
      measured when None.
    baseline_blessed: an upstream blessing of the baseline, if wired.
    baseline_blessing_problem: why a wired baseline blessing cannot vouch
      for the baseline (absent, another model's), if it cannot.
    pruning_search: the Pruner's pruning_search.json, if any (for the report).
    work_dir: a scratch directory.

  Returns:
    The Decision and the report's data (see report.py).

  Raises:
    features.DataError: empty split, label not in the schema, inputs that are
      not features.
    EvaluationError: models that cannot be compared, labels that are not
      class ids.
    model_io.ModelLoadError: a model that cannot be loaded.
  """
  split = config.eval_split
  if schema is None and not transform_dir:
    raise EvaluationError("The evaluator needs `schema` (or `transform_graph`) "
                          "to decode the Examples; wire the SchemaGen's output.")
  baseline_kind = model_io.model_kind(baseline_path)
  if baseline_kind == "tflite":
    raise EvaluationError(
        f"`baseline_model` at {baseline_path} is a TFLite model; the baseline "
        "must be the Keras SavedModel the candidate was compressed from (the "
        "Trainer's model).")
  baseline_src = ModelSource("baseline", "keras", baseline_path,
                             config.module_file)
  candidate_kind = model_io.model_kind(candidate_path)
  if candidate_kind == "tflite":
    candidate_src = ModelSource("candidate", "tflite",
                                model_io.find_tflite(candidate_path),
                                io=dict(candidate_io or {}))
  else:
    candidate_src = ModelSource("candidate", "keras", candidate_path,
                                config.module_file)
  logging.info("Loading the baseline (%s) and the candidate (%s).",
               baseline_path, candidate_src.path)
  baseline = baseline_src.load()
  candidate = candidate_src.load()
  _check_inputs(baseline, candidate)

  decoder_spec = DecoderSpec.from_specs(schema, config.label_key,
                                        baseline.input_specs, transform_dir)
  decoder = decoder_spec.build()  # label / feature errors before Beam starts
  decoder.check_label()
  _check_top_k(config, baseline.num_outputs)
  try:
    features_lib.list_files(file_patterns, split)
  except features_lib.DataError as e:
    raise features_lib.DataError(
        f"{e} The CompressionEvaluator writes no blessing on zero examples.") from e

  # Whether each model outputs probabilities or logits is decided once, so
  # that every batch on every worker reads it alike.
  probe = _first_features(decoder, file_patterns, split,
                          min(config.batch_size, 256))
  output_kinds, kinds_source = _output_kinds(config, baseline, candidate, probe)
  logging.info("Model outputs read as: %s (%s)", output_kinds, kinds_source)
  started = time.time()
  stats = compute_stats(pipeline, file_patterns, decoder_spec,
                        {"baseline": baseline_src, "candidate": candidate_src},
                        config.batch_size, config.top_k, work_dir,
                        output_kinds)
  logging.info("Metrics computed by Beam in %.1f s.", time.time() - started)
  if not stats or stats["baseline"].examples == 0:
    raise features_lib.DataError(
        f"The '{split}' split yielded no example; the CompressionEvaluator "
        "writes no blessing on zero examples.")
  base_stats, cand_stats = stats["baseline"], stats["candidate"]
  _check_top_k(config, base_stats.num_classes)
  if base_stats.missing_labels:
    raise features_lib.DataError(
        features_lib.missing_labels_message(
            base_stats.missing_labels, base_stats.examples, split,
            config.label_key) +
        " The CompressionEvaluator writes no blessing on made-up labels.")
  if base_stats.bad_labels or cand_stats.bad_labels:
    raise EvaluationError(
        f"{max(base_stats.bad_labels, cand_stats.bad_labels)} of "
        f"{base_stats.examples} examples have a `label_key`="
        f"{config.label_key!r} value that is not a class id in "
        f"[0, {base_stats.num_classes}) (the model's output classes). Check "
        "label_key, or map the labels to ids with Transform.")
  base_metrics = metrics_from_stats(base_stats)
  cand_metrics = metrics_from_stats(cand_stats)

  # Sizes and latency, on the same representation for both models.
  started = time.time()
  base_sm_bytes, base_sm_gzip = saved_model_sizes(baseline_path)
  latency = {"baseline_seconds": None, "candidate_seconds": None,
             "samples": 0, "warmup": LATENCY_WARMUP, "threads": 1,
             "block": 1}
  n_lat = config.latency_samples
  if candidate_src.kind == "tflite":
    cand_content = candidate.content
    base_content = keras_to_float_tflite(baseline.model)
    base_bytes, base_gzip = tflite_sizes(base_content)
    cand_bytes, cand_gzip = tflite_sizes(cand_content)
    representation = ("TFLite: the baseline converted to float32 TFLite "
                      "(batch 1) against the candidate's .tflite")
    runtime = (f"TFLite interpreter ({tflite_runtime.runtime_name()}), "
               "invoke() per example")
    if n_lat:
      lat_features = _first_features(decoder, file_patterns, split, n_lat)
      base_tfl = TFLitePredictor(model_content=base_content,
                                 role="baseline (float TFLite)")
      secs = tflite_latency({"baseline": base_tfl, "candidate": candidate},
                            lat_features)
      latency.update(baseline_seconds=secs["baseline"],
                     candidate_seconds=secs["candidate"],
                     samples=len(next(iter(lat_features.values()))),
                     block=LATENCY_BLOCK)
    measured_sparsity = tflite_sparsity(cand_content)
  else:
    base_bytes, base_gzip = base_sm_bytes, base_sm_gzip
    cand_bytes, cand_gzip = saved_model_sizes(candidate_path)
    representation = "SavedModel directories (all files) of both models"
    runtime = "TensorFlow, tf.function batch-1 call per example"
    if n_lat:
      lat_features = _first_features(decoder, file_patterns, split, n_lat)
      secs, threads = keras_latency(
          {"baseline": baseline_path, "candidate": candidate_path},
          lat_features, config.module_file)
      latency.update(baseline_seconds=secs["baseline"],
                     candidate_seconds=secs["candidate"], threads=threads,
                     samples=len(next(iter(lat_features.values()))))
    measured_sparsity = model_stats.sparsity_stats(candidate.model)["sparsity"]
  logging.info("Sizes and latency measured in %.1f s.", time.time() - started)
  latency["runtime"] = runtime
  latency["latency_ratio"] = _ratio(latency["candidate_seconds"],
                                    latency["baseline_seconds"])
  sizes = {
      "representation": representation,
      "baseline_bytes": base_bytes, "candidate_bytes": cand_bytes,
      "baseline_gzip_bytes": base_gzip, "candidate_gzip_bytes": cand_gzip,
      "size_ratio": _ratio(base_bytes, cand_bytes),
      "gzip_size_ratio": _ratio(base_gzip, cand_gzip),
      "baseline_saved_model_bytes": base_sm_bytes,
      "baseline_saved_model_gzip_bytes": base_sm_gzip,
      "compression_measure": config.compression_measure,
  }
  compression_ratio = sizes["size_ratio" if config.compression_measure == "raw"
                            else "gzip_size_ratio"]
  sizes["compression_ratio"] = compression_ratio

  gate = config.thresholds
  chance = chance_accuracy(base_stats)
  decision = decide(gate, base_metrics, cand_metrics, compression_ratio,
                    latency["latency_ratio"],
                    baseline_nonfinite=base_stats.nonfinite,
                    candidate_nonfinite=cand_stats.nonfinite,
                    examples=base_stats.examples,
                    baseline_blessed=baseline_blessed,
                    baseline_blessing_problem=baseline_blessing_problem,
                    counted=base_stats.count,
                    min_examples=config.min_examples,
                    chance_accuracy=chance)
  finite = all(math.isfinite(m[gate.metric])
               for m in (base_metrics, cand_metrics))
  report = {
      "blessed": decision.blessed,
      "verdict": decision.verdict,
      "reasons": list(decision.reasons),
      "metric": gate.metric,
      "higher_is_better": thresholds_lib.higher_is_better(gate.metric),
      "thresholds": gate.to_dict(),
      "checks": [c.to_dict() for c in decision.checks],
      "metric_drop": (gate.drop(base_metrics[gate.metric],
                                cand_metrics[gate.metric]) if finite else None),
      "metrics": {"baseline": base_metrics, "candidate": cand_metrics},
      "examples": {
          "split": split, "count": base_stats.examples,
          "baseline_nonfinite": base_stats.nonfinite,
          "candidate_nonfinite": cand_stats.nonfinite,
          "baseline_logit_rows": base_stats.logit_rows,
          "candidate_logit_rows": cand_stats.logit_rows,
          "num_classes": base_stats.num_classes, "top_k": config.top_k,
          "baseline_outputs": output_kinds["baseline"],
          "candidate_outputs": output_kinds["candidate"],
          "outputs_read": kinds_source,
          "label_key": config.label_key,
          "counted": base_stats.count,
          "min_examples": config.min_examples,
          "chance_accuracy": chance,
          "baseline_at_chance": bool(
              chance is not None and math.isfinite(base_metrics["accuracy"])
              and base_metrics["accuracy"] <= chance),
      },
      "sizes": sizes,
      "latency": latency,
      "sparsity": {
          "candidate": (candidate_sparsity if candidate_sparsity is not None
                        else measured_sparsity),
          "source": ("recorded by the step that wrote the candidate"
                     if candidate_sparsity is not None else
                     "measured: zeros in the candidate's kernel weights"),
          "measured": measured_sparsity,
          "baseline": model_stats.sparsity_stats(baseline.model)["sparsity"],
      },
      "models": {
          "baseline": {"kind": "keras", "path": baseline_path},
          "candidate": {"kind": candidate_src.kind, "path": candidate_src.path,
                        "preprocessing": (candidate_io or {}).get(
                            "preprocessing")},
          "transform_graph": bool(transform_dir),
      },
      "baseline_blessed": baseline_blessed,
      "pruning_search": dict(pruning_search) if pruning_search else None,
      "config": config.to_dict(),
  }
  return EvaluationResult(decision=decision, report=report)
