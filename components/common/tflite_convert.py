"""Keras model -> TFLite flatbuffer, and what a flatbuffer holds.

The conversion, the description of a TFLite model's inputs and outputs and its
weight sparsity, shared by the Quantizer (which writes the TFLite model) and
the CompressionEvaluator (which converts the baseline to float TFLite the same
way and measures the candidate's sparsity). TFX-free.

The TFLite model takes the Keras model's named inputs (one tensor per feature,
batch fixed to 1), never serialized tf.Examples.

Example:

    flatbuffer = convert(model, "float")
    describe_tflite(flatbuffer)["inputs"]
    tflite_weight_sparsity(flatbuffer)["sparsity"]
"""

import collections
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import keras_env
from tfx_compression.components.common import tflite_runtime

# Modes that calibrate on representative samples (the Quantizer's DATA_MODES).
CALIBRATED_MODES = ("int8", "int16x8", "qat")
SIGNATURE_KEY = "serving_default"
TFLITE_BATCH_SIZE = 1


# TFLite ops whose constant input at this position is a weight matrix (the
# ones pruning zeroes); the same set as model_stats.kernel_weights on Keras.
_WEIGHT_INPUT = {
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 1,
    "CONV_3D": 1,
    "FULLY_CONNECTED": 1,
    "TRANSPOSE_CONV": 1,
    "CONV_3D_TRANSPOSE": 1,
}
_IO_DTYPES = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}


class ConversionError(ValueError):
  """The TFLite converter cannot convert the model with these settings."""




def convert(model, mode: str, samples: Sequence[Mapping[str, np.ndarray]] = (),
            io_type: str = "float32", allow_select_ops: bool = False,
            input_specs: Optional[Mapping[str, tf.TensorSpec]] = None,
            output_names: Optional[Sequence[str]] = None) -> bytes:
  """Runs the TFLite converter in one mode ('float' or a Quantizer mode).

  Example:

      flatbuffer = convert(model, "float16")

  Args:
    model: the Keras 3 or tf_keras model (for 'qat', the quantization-aware
      tf_keras one).
    mode: 'float', 'dynamic', 'float16', 'int8', 'int16x8' or 'qat'.
    samples: single-example feature dicts (batch 1) for calibration.
    io_type: 'float32', 'int8' or 'uint8' inputs/outputs ('int8', 'qat').
    allow_select_ops: let TensorFlow ops (Flex) stand in for missing builtins.
    input_specs: the model's inputs by name (default: read from the model).
    output_names: names of the TFLite outputs (default: the model's).

  Returns:
    The TFLite flatbuffer.

  Raises:
    ConversionError: naming the unsupported ops and what to do.
  """
  fn = _serving_function(model, input_specs, output_names)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [fn], _trackable(model))
  builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if mode != "float":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "float16":
    converter.target_spec.supported_types = [tf.float16]
  if mode in CALIBRATED_MODES:
    if not samples:
      raise ValueError(f"quantization={mode!r} needs representative samples.")
    converter.representative_dataset = lambda: iter(samples)
  if mode in ("int8", "qat"):
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = _IO_DTYPES[io_type]
    converter.inference_output_type = _IO_DTYPES[io_type]
  elif mode == "int16x8":
    builtins = [tf.lite.OpsSet.
                EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
  if allow_select_ops:
    builtins = builtins + [tf.lite.OpsSet.SELECT_TF_OPS]
  converter.target_spec.supported_ops = builtins
  from tensorflow.lite.python import convert_phase  # pylint: disable=g-import-not-at-top
  try:
    return converter.convert()
  except (convert_phase.ConverterError, ValueError, RuntimeError) as e:
    raise _conversion_error(e, mode, allow_select_ops) from e


def _conversion_error(error: Exception, mode: str,
                      allow_select_ops: bool) -> ConversionError:
  """A ConversionError naming the ops the converter rejected and what to do."""
  text = str(error)
  ops = []
  for data in getattr(error, "errors", None) or []:
    name = getattr(getattr(data, "operator", None), "name", "")
    if name and name not in ops:
      ops.append(name)
  for name in re.findall(r"'(tf\.\w+)' op", text):
    if name not in ops:
      ops.append(name)
  for line in re.findall(r"(?:TF Select ops|Flex ops|Custom ops): ([^\n]+)",
                         text):
    for name in line.split(","):
      name = "tf." + name.strip().replace("Flex", "", 1)
      if name != "tf." and name not in ops:
        ops.append(name)
  detail = " ".join(text.split())[:600]
  if ops and not allow_select_ops:
    return ConversionError(
        f"The TFLite converter cannot convert the model with "
        f"quantization={mode!r}: these ops are not TFLite builtins: "
        f"{', '.join(ops)}. Set `allow_select_ops`=1 to run them as TensorFlow "
        "select ops (the device's TFLite runtime must then link the Flex "
        "delegate), or replace them in the model. Converter said: " + detail)
  if ops:
    return ConversionError(
        f"The TFLite converter cannot convert the model with "
        f"quantization={mode!r} even with `allow_select_ops`=1: ops "
        f"{', '.join(ops)} are neither TFLite builtins nor TensorFlow select "
        "ops. Replace them in the model. Converter said: " + detail)
  return ConversionError(
      f"The TFLite converter failed with quantization={mode!r} "
      f"(allow_select_ops={int(allow_select_ops)}): {detail}. If an op cannot "
      "be quantized, try quantization='dynamic' or 'float16'; if an op is not "
      "a TFLite builtin, set `allow_select_ops`=1.")


def _trackable(model):
  """What the converter saves beside the function: the model's variables.

  A Keras 3 model tracks Keras variables, which wrap the tf.Variables its
  call reads; the converter needs those tf.Variables tracked (else MLIR fails
  on an unresolved ReadVariableOp), so they are held by a tf.Module.
  """
  if not keras_env.is_keras3(model):
    return model
  holder = tf.Module()
  holder.variables_read = [v.value for v in model.variables]
  return holder


def model_output_names(model) -> List[str]:
  names = list(getattr(model, "output_names", None) or [])
  return names or [f"output_{i}" for i in range(len(model.outputs))]


def _serving_function(model, input_specs=None, output_names=None):
  """A concrete function: named feature tensors (batch 1) -> named outputs."""
  specs = collections.OrderedDict(
      input_specs or features_lib.keras_input_specs(model))
  signature = {}
  for name, spec in specs.items():
    shape = spec.shape.as_list() if spec.shape.rank is not None else None
    if shape and shape[0] is None:
      shape = [TFLITE_BATCH_SIZE] + shape[1:]
    signature[name] = tf.TensorSpec(shape, spec.dtype, name=name)
  names = list(output_names or model_output_names(model))
  takes_dict = isinstance(getattr(model, "input", None), dict)

  # autograph=False: converting the Keras call graph costs ~10 s on the first
  # trace in a process and changes nothing for a Keras model's call.
  @tf.function(input_signature=[signature], autograph=False)
  def serve(features):
    if takes_dict:
      inputs = features
    elif len(specs) == 1:
      inputs = features[next(iter(specs))]
    else:
      inputs = [features[n] for n in specs]
    outputs = model(inputs, training=False)
    if isinstance(outputs, Mapping):
      return dict(outputs)
    if isinstance(outputs, (list, tuple)):
      return dict(zip(names, outputs))
    return {names[0]: outputs}

  return serve.get_concrete_function()




def describe_tflite(tflite_model: bytes,
                    signature_key: str = SIGNATURE_KEY) -> Dict[str, Any]:
  """How to feed a TFLite model: its signature's inputs and outputs.

  ``inputs`` and ``outputs`` are in the interpreter's tensor order (the order
  of ``get_input_details()``, which is what a device indexes); each entry names
  the feature (``name``, the signature's key), the tensor, dtype, shape and the
  quantization a caller must apply (q = round(x / scale) + zero_point) when the
  dtype is an integer.

  Example:

      io = describe_tflite(flatbuffer)
      [i["name"] for i in io["inputs"]]
  """
  interpreter = tflite_runtime.make_interpreter(model_content=tflite_model)
  signatures = interpreter.get_signature_list()
  if signature_key not in signatures:
    signature_key = next(iter(signatures))
  runner = interpreter.get_signature_runner(signature_key)
  by_index = {}
  for name, d in runner.get_input_details().items():
    by_index[d["index"]] = name
  inputs = [_tensor_entry(by_index.get(d["index"], d["name"]), d)
            for d in interpreter.get_input_details()]
  out_by_index = {d["index"]: name
                  for name, d in runner.get_output_details().items()}
  outputs = [_tensor_entry(out_by_index.get(d["index"], d["name"]), d)
             for d in interpreter.get_output_details()]
  return {
      "format": "tflite",
      "signature_key": signature_key,
      "batch_size": TFLITE_BATCH_SIZE,
      "inputs": inputs,
      "outputs": outputs,
  }


def _tensor_entry(name: str, d: Mapping[str, Any]) -> Dict[str, Any]:
  q = d.get("quantization_parameters") or {}
  scales = [float(s) for s in np.asarray(q.get("scales", []))]
  zero_points = [int(z) for z in np.asarray(q.get("zero_points", []))]
  return {
      "name": name,
      "tensor_name": d["name"],
      "index": int(d["index"]),
      "dtype": np.dtype(d["dtype"]).name,
      "shape": [int(s) for s in d["shape"]],
      "shape_signature": [int(s) for s in d.get("shape_signature", d["shape"])],
      "quantization": {
          "scale": scales[0] if len(scales) == 1 else scales,
          "zero_point": zero_points[0] if len(zero_points) == 1 else zero_points,
      } if scales else None,
  }


def tflite_weight_sparsity(tflite_model: bytes) -> Dict[str, Any]:
  """Fraction of the stored weight values that represent exactly zero.

  Counts the constant weight tensors of Conv and FullyConnected ops (followed
  back through DEQUANTIZE, which float16 and some int8 models put between the
  stored weights and the op), each tensor once. A value counts as zero when it
  is 0.0 (float) or equals its zero point (quantized; TFLite's int8 weights
  are symmetric, zero point 0). Rounding to int8 turns weights smaller than
  half a quantization step into zeros, so this can exceed the Keras model's
  sparsity; it never loses a pruned zero.

  Example:

      tflite_weight_sparsity(flatbuffer)["sparsity"]
  """
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  fb = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite_model))
  total = zeros = 0
  seen = set()
  for graph_index, graph in enumerate(fb.subgraphs):
    producer = {}
    for op in graph.operators:
      for t in op.outputs:
        producer[int(t)] = op
    for op in graph.operators:
      position = _WEIGHT_INPUT.get(flatbuffer_utils.opcode_to_name(
          fb, op.opcodeIndex))
      if position is None or len(op.inputs) <= position:
        continue
      tensor_index = int(op.inputs[position])
      source = producer.get(tensor_index)
      if (source is not None and flatbuffer_utils.opcode_to_name(
          fb, source.opcodeIndex) == "DEQUANTIZE"):
        tensor_index = int(source.inputs[0])
      if (graph_index, tensor_index) in seen:
        continue
      seen.add((graph_index, tensor_index))
      values = _constant_values(fb, graph.tensors[tensor_index])
      if values is None:
        continue
      total += values.size
      zeros += int(np.sum(values == _zero_of(graph.tensors[tensor_index],
                                             values)))
  return {"sparsity": zeros / total if total else 0.0,
          "weight_count": total, "zero_count": zeros}


def _constant_values(fb, tensor) -> Optional[np.ndarray]:
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  data = fb.buffers[tensor.buffer].data if tensor.buffer < len(fb.buffers) else None
  if data is None or len(data) == 0:
    return None
  dtype = np.dtype(flatbuffer_utils.type_to_name(tensor.type).lower())
  values = np.frombuffer(bytes(bytearray(data)), dtype=dtype)
  shape = [int(s) for s in tensor.shape] if tensor.shape is not None else []
  return values.reshape(shape) if shape and np.prod(shape) == values.size else values


def _zero_of(tensor, values: np.ndarray):
  q = tensor.quantization
  zp = getattr(q, "zeroPoint", None) if q is not None else None
  if zp is None or len(zp) == 0 or values.dtype.kind == "f":
    return 0
  zp = np.asarray(zp, dtype=np.int64)
  if zp.size == 1 or values.ndim == 0:
    return int(zp[0])
  axis = int(getattr(q, "quantizedDimension", 0) or 0)
  shape = [1] * values.ndim
  shape[axis] = zp.size
  return zp.reshape(shape)
