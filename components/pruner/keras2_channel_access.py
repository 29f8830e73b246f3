"""tf_keras's side of channel pruning: its layer types, its functional graph, its rebuild.

The channel rules (``channel_rules``), the analysis (``channel_graph``) and the
slicing of weights (``channel_rebuild``) are written once for both Kerases; they
ask this object (``ACCESS``) what differs: which kind a layer is, the nodes of the
graph in order, tensor shapes, how to evaluate a function on numbers, and how to
call new layers along the old graph. ``keras3_channel_access`` is the Keras 3 twin.

Example:

    graph = channel_graph.analyze(model, access=ACCESS)   # ACCESS is the default
"""

import collections
import operator
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_keras.src.engine import keras_tensor

from tfx_compression.components.pruner import channel_rules as rules
from tfx_compression.components.pruner.channel_graph import ChannelPruningError

# tf_keras has no public API for the functional graph: it is read through
# Model._nodes_by_depth, _input_layers, _nested_inputs/_nested_outputs.
# pylint: disable=protected-access

# One call of a layer: the layer, its tensor inputs and outputs, and its arguments.
Node = collections.namedtuple("Node", "layer ins outs is_input args kwargs")

_L = keras.layers
# TF operations a Keras tensor meets with a constant (MobileNetV3's hard-sigmoid
# is relu6(x + 3) * (1 / 6)): TFOpLambda symbol -> the operation on numbers.
_SCALAR_OPS: Dict[str, Callable[[Any, Any], Any]] = {
    "__operators__.add": operator.add, "math.add": operator.add,
    "math.subtract": operator.sub, "math.multiply": operator.mul,
    "math.truediv": operator.truediv, "math.divide": operator.truediv,
}


def _is_tensor(value) -> bool:
  # Not backend.is_keras_tensor: it raises on the constant of ``x + 3.0``.
  return isinstance(value, keras_tensor.KerasTensor)


class Keras2Access(rules.LayerKinds):
  """What channel analysis and rebuild need to know of tf_keras."""

  name = "tf_keras"
  depthwise_kernel = "depthwise_kernel"

  def __init__(self):
    super().__init__(_L)

  def is_operation(self, layer) -> bool:
    return type(layer).__name__ == "TFOpLambda"

  def shape(self, tensor) -> Optional[Tuple[Optional[int], ...]]:
    shape = tensor.shape
    if shape.rank is None:
      return None
    return tuple(shape.as_list())

  def evaluate(self, fn, x: np.ndarray) -> Optional[np.ndarray]:
    try:
      return np.asarray(fn(tf.constant(x)))
    except (ValueError, TypeError, tf.errors.OpError):
      return None

  def scalar_op(self, layer, args: tuple, kwargs: Dict[str, Any]
                ) -> Optional[bool]:
    """For ``x <op> constant``: whether it maps 0 to 0; None: not such an op."""
    fn = _SCALAR_OPS.get(getattr(layer, "symbol", None))
    constants = list(args[1:]) + [v for k, v in kwargs.items() if k == "y"]
    if (fn is None or not args or not _is_tensor(args[0])
        or len(constants) != 1 or not isinstance(constants[0], (int, float))):
      return None
    return fn(0.0, constants[0]) == 0

  def blocker_reason(self, layer) -> str:
    kind = type(layer).__name__
    if isinstance(layer, _L.Lambda):
      return "a Lambda's function may depend on the channel count"
    if kind in ("TFOpLambda", "SlicingOpLambda"):
      return "a TensorFlow operation applied to a Keras tensor"
    if isinstance(layer, keras.Model):
      return "a nested model"
    if type(layer).__module__.startswith("tf_keras."):
      return f"{kind} is not channel-wise or not supported"
    return "a custom layer"

  def check_functional(self, model) -> None:
    if not isinstance(model, keras.Model):
      raise ChannelPruningError(
          f"Channel pruning needs a tf_keras Model; got {type(model).__name__}.")
    if not getattr(model, "_is_graph_network", False):
      raise ChannelPruningError(
          f"Channel pruning needs a functional or Sequential tf_keras model, "
          f"but '{model.name}' is a subclassed model ({type(model).__name__}), "
          "whose graph cannot be rebuilt narrower. Build it with the functional "
          "API (keras.Model(inputs, outputs)), or use "
          "sparsity_structure='unstructured'.")

  def is_graph_model(self, layer) -> bool:
    return (isinstance(layer, keras.Model)
            and getattr(layer, "_is_graph_network", False))

  def nodes(self, model) -> list:
    """Every call of a layer in ``model``, inputs first, in graph order."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
      for node in model._nodes_by_depth[depth]:
        nodes.append(Node(node.layer, list(node.keras_inputs),
                          tf.nest.flatten(node.outputs), node.is_input,
                          () if node.is_input else tuple(node.call_args),
                          {} if node.is_input else dict(node.call_kwargs)))
    return nodes

  def outputs(self, model) -> list:
    return list(zip(model.outputs, model.output_names))

  def to_numpy(self, weight) -> np.ndarray:
    return weight.numpy()

  def rebuild_graph(self, model, make_layer: Callable[[Any], Any]):
    """A new model of new layers (``make_layer(old)``) called as in ``model``.

    Returns:
      (the new functional model, {layer name: (old layer, new layer)}).
    """
    new_layers: Dict[str, Any] = {}
    tensors: Dict[int, Any] = {}
    for layer in model._input_layers:
      new = keras.layers.InputLayer(**layer.get_config())
      tensors[id(tf.nest.flatten(layer._inbound_nodes[0].outputs)[0])] = (
          tf.nest.flatten(new._inbound_nodes[0].outputs)[0])
    for node in self.nodes(model):
      if node.is_input:
        continue
      layer = node.layer
      if layer.name not in new_layers:
        new_layers[layer.name] = (layer, make_layer(layer))
      args, kwargs = tf.nest.map_structure(
          lambda t: tensors[id(t)] if _is_tensor(t) else t,
          (node.args, node.kwargs))
      outputs = new_layers[layer.name][1](*args, **kwargs)
      for old, new in zip(node.outs, tf.nest.flatten(outputs)):
        tensors[id(old)] = new
    inputs = tf.nest.map_structure(lambda t: tensors[id(t)], model._nested_inputs)
    outputs = tf.nest.map_structure(lambda t: tensors[id(t)],
                                    model._nested_outputs)
    return keras.Model(inputs, outputs, name=model.name), new_layers


ACCESS = Keras2Access()
