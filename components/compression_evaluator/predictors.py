"""The models the CompressionEvaluator compares: where they are, how they predict.

:class:`ModelSource` says where a model is and loads it (picklable, so each Beam
worker loads its own); :class:`KerasPredictor` and :class:`TFLitePredictor` give
batched predictions fed by feature name; :func:`output_kind_from_model` reads off a
Keras classifier's loss and output layer whether it outputs probabilities or logits.

Example:

    predictor = ModelSource("candidate", "tflite", "/m/model.tflite").load()
    scores = predictor.predict({"pixel_00": np.zeros((4, 1), np.float32), ...})
"""

import collections
import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import model_io
from tfx_compression.components.common import tflite_runtime
from tfx_compression.components.common import tflite_convert
from tfx_compression.components.common import tflite_packing
from tfx_compression.components.common import user_module

# The models or the data cannot be compared; no blessing is written. One class
# with the shared metrics' error, so callers catch either name.
EvaluationError = metrics_lib.MetricsError


def load_custom_objects(module_file: Optional[str]) -> Optional[Dict[str, Any]]:
  """``custom_objects`` from a user module (a dict, or a function returning one)."""
  if not module_file:
    return None
  objects = user_module.load(module_file, ("custom_objects",),
                             error=EvaluationError)["custom_objects"]
  return user_module.custom_objects(objects, module_file, error=EvaluationError)


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
    try:
      it.allocate_tensors()
    except RuntimeError as e:
      if "Select TensorFlow op" not in str(e):
        raise
      # TF >= 2.20's tf.lite and LiteRT's Python wheels ship without the
      # Flex delegate: a model converted with allow_select_ops=1 cannot run.
      raise EvaluationError(
          f"`{role}_model` at {path} uses TensorFlow select (Flex) ops, which "
          f"this machine's TFLite runtime ({tflite_runtime.runtime_name()}) "
          "cannot run, so it cannot be measured here. Evaluate it where the "
          "runtime links the Flex delegate (TensorFlow < 2.20's tf.lite does), "
          "or re-quantize without `allow_select_ops`.") from e
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
      value = tflite_packing.pack(row, self.packed)
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
  return tflite_convert.convert(model, "float")


def tflite_sparsity(content: bytes) -> float:
  """Share of zeros in a TFLite model's Conv/FullyConnected weights (the
  Quantizer's measure: zero-point aware, through DEQUANTIZE ops)."""
  return tflite_convert.tflite_weight_sparsity(content)["sparsity"]
