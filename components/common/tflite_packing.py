"""One packed input tensor for a model whose feature inputs all meet in one Concatenate.

A TFX Keras model usually takes each feature as its own named input and joins them
with a ``Concatenate`` layer. Converted as is, the TFLite model keeps one input per
feature, and a full-integer model adds one QUANTIZE op per input and a
CONCATENATION that requantizes each of them: on a small model (the demo's 64 pixel
inputs) that fixed work is a large share of the latency. ``pack_inputs`` gives the
converter the part of the model after the Concatenate, fed by one
``[batch, width]`` tensor holding the features side by side in the recorded order.

Example:

    packed = pack_inputs(model)
    packed.features     # ['pixel_00', ..., 'pixel_63']: the order to pack in
    packed.model        # takes {'packed_features': [batch, 64]}
    packed.pack(row)    # feature dict -> one [batch, 64] array
"""

import dataclasses
import logging
from typing import Any, Dict, List, Mapping

import numpy as np
import tf_keras

PACKED_INPUT = "packed_features"


class PackingError(ValueError):
  """The model's inputs cannot be packed into one tensor."""


def pack(row: Mapping[str, Any], spec: Mapping[str, Any]) -> np.ndarray:
  """Feature dict -> one [batch, sum(widths)] array, as ``spec`` says.

  ``spec`` is the ``packed`` entry of ``tflite_io.json``
  (:meth:`PackedModel.to_dict`): the features in order, their widths, the
  dtype. Each value is [batch, width], or [batch] for a width of 1.
  """
  return np.concatenate(
      [np.asarray(row[name], dtype=spec["dtype"]).reshape(-1, width)
       for name, width in zip(spec["features"], spec["widths"])], axis=1)


@dataclasses.dataclass
class PackedModel:
  """The model after its Concatenate, and how to pack its features.

  Attributes:
    model: a model of the input's Keras (3 or tf_keras) taking
      ``{PACKED_INPUT: [batch, sum(widths)]}``.
    features: the feature names in packed order.
    widths: the values each feature takes in the packed vector.
    dtype: the packed tensor's dtype.
    concatenate: the name of the Concatenate layer that was cut.
  """
  model: Any
  features: List[str]
  widths: List[int]
  dtype: str
  concatenate: str

  def pack(self, row: Mapping[str, Any]) -> np.ndarray:
    """Feature dict (each [batch, width] or [batch]) -> [batch, total] array."""
    return pack(row, self.to_dict())

  def to_dict(self) -> Dict[str, Any]:
    """What ``tflite_io.json`` records: how a device builds the input."""
    return {"input": PACKED_INPUT, "features": list(self.features),
            "widths": list(self.widths), "dtype": self.dtype,
            "concatenate": self.concatenate}


def _why(model) -> str:
  names = (getattr(model, "input_names", None)
           or [t.name.split(":")[0] for t in model.inputs])
  return (f" Leave `pack_inputs`=0 to keep one TFLite input per feature "
          f"(model inputs: {list(names)}).")


def pack_inputs(model) -> PackedModel:
  """The part of ``model`` after the Concatenate that joins all its inputs.

  Raises:
    PackingError: the model is not functional, an input is not a float
      [batch, width] tensor, or the inputs do not all go, each once and only,
      into one Concatenate on the last axis.
  """
  from tfx_compression.components.common import keras_env  # pylint: disable=g-import-not-at-top
  if keras_env.is_keras3(model):
    return _pack_inputs_keras3(model)
  if not isinstance(model, tf_keras.Model) or not getattr(
      model, "_is_graph_network", False):
    raise PackingError(
        f"`pack_inputs`=1 needs a functional or Sequential tf_keras model; got "
        f"{type(model).__name__}, whose graph cannot be cut.")
  inputs = list(model.inputs)
  names = list(model.input_names or [])
  if len(names) != len(inputs):
    names = [t.name.split(":")[0] for t in inputs]
  if len(inputs) < 2:
    raise PackingError("`pack_inputs`=1: the model has a single input already; "
                       "there is nothing to pack." + _why(model))
  name_of = {id(t): n for t, n in zip(inputs, names)}
  dtypes = {t.dtype.name for t in inputs}
  for t, n in zip(inputs, names):
    if t.shape.rank != 2 or t.shape[-1] is None or not t.dtype.is_floating:
      raise PackingError(
          f"`pack_inputs`=1: input {n!r} is {t.dtype.name} with shape "
          f"{t.shape.as_list()}; only float [batch, width] inputs can be packed."
          + _why(model))
  node, layer, joined = _the_concatenate(
      model, inputs, name_of, dtypes,
      model._nodes_by_depth,  # pylint: disable=protected-access
      lambda n: n.keras_inputs, lambda n: n.layer,
      tf_keras.layers.Concatenate)

  width = sum(int(t.shape[-1]) for t in joined)
  packed = tf_keras.Input((width,), name=PACKED_INPUT, dtype=joined[0].dtype)
  # A model from the Concatenate's output on: Keras warns that the input is
  # not an Input layer's, and builds the sub-graph after it.
  keras_log = logging.getLogger("tensorflow")
  level = keras_log.level
  keras_log.setLevel(logging.ERROR)
  try:
    tail = tf_keras.Model(node.outputs, model.output, name=f"{model.name}_tail")
  finally:
    keras_log.setLevel(level)
  result = tf_keras.Model({PACKED_INPUT: packed}, tail(packed),
                          name=f"{model.name}_packed")
  return PackedModel(model=result, features=[name_of[id(t)] for t in joined],
                     widths=[int(t.shape[-1]) for t in joined],
                     dtype=joined[0].dtype.name, concatenate=layer.name)


def _the_concatenate(model, inputs, name_of, dtypes, nodes_by_depth,
                     node_inputs, node_layer, concatenate_class):
  """(node, layer, joined tensors) of the one Concatenate every input feeds.

  The same rules for both Kerases; ``node_inputs`` / ``node_layer`` read a
  graph node the way that Keras names it.

  Raises:
    PackingError: mixed dtypes, an input feeding several layers, or inputs
      that do not all go, once each, into one Concatenate on the last axis.
  """
  if len(dtypes) != 1:
    raise PackingError(f"`pack_inputs`=1: the inputs mix dtypes {sorted(dtypes)}."
                       + _why(model))
  consumers: Dict[int, List[Any]] = {id(t): [] for t in inputs}
  for depth in nodes_by_depth.values():
    for node in depth:
      if node.is_input:
        continue
      for t in node_inputs(node):
        if id(t) in consumers:
          consumers[id(t)].append(node)
  for t in inputs:
    if len(consumers[id(t)]) != 1:
      raise PackingError(
          f"`pack_inputs`=1: input {name_of[id(t)]!r} feeds "
          f"{len(consumers[id(t)])} layers; each input must go into the one "
          "Concatenate only." + _why(model))
  nodes = {id(consumers[id(t)][0]): consumers[id(t)][0] for t in inputs}
  node = next(iter(nodes.values()))
  layer = node_layer(node)
  axis = getattr(layer, "axis", None)
  if (len(nodes) != 1 or not isinstance(layer, concatenate_class)
      or axis not in (-1, 1)):
    used = sorted({node_layer(n).name for n in nodes.values()})
    raise PackingError(
        f"`pack_inputs`=1: the inputs go into {used}, not into one Concatenate "
        "on the last axis, so they cannot be replaced by one packed tensor."
        + _why(model))
  joined = list(node_inputs(node))
  if len(joined) != len(inputs) or len({id(t) for t in joined}) != len(joined):
    raise PackingError(
        f"`pack_inputs`=1: Concatenate {layer.name!r} joins "
        f"{len(joined)} tensors, not exactly the model's {len(inputs)} inputs."
        + _why(model))
  return node, layer, joined


def _pack_inputs_keras3(model) -> PackedModel:
  """:func:`pack_inputs` for a Keras 3 functional model (same rules)."""
  import keras  # pylint: disable=g-import-not-at-top
  nodes_by_depth = getattr(model, "_nodes_by_depth", None)
  if nodes_by_depth is None:
    raise PackingError(
        f"`pack_inputs`=1 needs a functional or Sequential Keras model; got "
        f"{type(model).__name__}, whose graph cannot be cut.")
  inputs = list(model.inputs)
  names = [t.name.split(":")[0] for t in inputs]
  if len(inputs) < 2:
    raise PackingError("`pack_inputs`=1: the model has a single input already; "
                       "there is nothing to pack." + _why(model))
  name_of = {id(t): n for t, n in zip(inputs, names)}
  for t, n in zip(inputs, names):
    if (len(t.shape) != 2 or t.shape[-1] is None
        or not np.dtype(t.dtype).kind == "f"):
      raise PackingError(
          f"`pack_inputs`=1: input {n!r} is {t.dtype} with shape "
          f"{list(t.shape)}; only float [batch, width] inputs can be packed."
          + _why(model))
  dtypes = {str(t.dtype) for t in inputs}
  node, layer, joined = _the_concatenate(
      model, inputs, name_of, dtypes, nodes_by_depth,
      lambda n: n.input_tensors, lambda n: n.operation,
      keras.layers.Concatenate)
  width = sum(int(t.shape[-1]) for t in joined)
  dtype = str(joined[0].dtype)
  # Keras 3 builds a model from an inner tensor on: the Concatenate's output
  # becomes the tail's Input.
  tail = keras.Model(node.output_tensors[0], model.outputs[0]
                     if len(model.outputs) == 1 else model.outputs,
                     name=f"{model.name}_tail")
  packed = keras.Input((width,), name=PACKED_INPUT, dtype=dtype)
  result = keras.Model({PACKED_INPUT: packed}, tail(packed),
                       name=f"{model.name}_packed")
  return PackedModel(model=result, features=[name_of[id(t)] for t in joined],
                     widths=[int(t.shape[-1]) for t in joined], dtype=dtype,
                     concatenate=layer.name)
