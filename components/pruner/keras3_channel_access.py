"""Keras 3's side of channel pruning: its layer types, its functional graph, its rebuild.

The twin of ``keras2_channel_access`` (read it first): the same questions
answered for Keras 3, whose functional graph is ``Functional._nodes_by_depth``
(a Sequential model through its functional twin), whose nodes hold operations
(``x + 3.0`` is a ``keras.src.ops.numpy.Add`` node, not a layer) and whose
DepthwiseConv kernel is called ``kernel``.

Example:

    graph = channel_graph.analyze(model, access=ACCESS)
"""

import operator
from typing import Any, Callable, Dict, Optional, Tuple

import keras
import numpy as np

from tfx_compression.components.pruner import channel_rules as rules
from tfx_compression.components.pruner.channel_graph import ChannelPruningError
from tfx_compression.components.pruner.keras2_channel_access import Node

# Keras 3 has no public API for the functional graph: it is read through
# Functional._nodes_by_depth, _inputs_struct/_outputs_struct and Node.arguments.
# pylint: disable=protected-access

_L = keras.layers
# Operations a Keras tensor meets with a constant (MobileNetV3's hard-sigmoid is
# relu6(x + 3) * (1 / 6)): class name in keras.src.ops.numpy -> the operation.
_SCALAR_OPS: Dict[str, Callable[[Any, Any], Any]] = {
    "Add": operator.add, "Subtract": operator.sub, "Multiply": operator.mul,
    "Divide": operator.truediv, "TrueDivide": operator.truediv,
}


def functional(model):
  """The Functional holding ``model``'s graph (a Sequential's twin)."""
  from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top
  if isinstance(model, Functional):
    return model
  if isinstance(model, keras.Sequential) and isinstance(
      getattr(model, "_functional", None), Functional):
    return model._functional
  raise ChannelPruningError(
      f"Channel pruning needs a functional or Sequential Keras model, but "
      f"'{getattr(model, 'name', model)}' is a {type(model).__name__} (a "
      "subclassed or unbuilt model), whose graph cannot be rebuilt narrower. "
      "Build it with the functional API (keras.Model(inputs, outputs)), or use "
      "sparsity_structure='unstructured'.")


def _is_tensor(value) -> bool:
  return isinstance(value, keras.KerasTensor)


class Keras3Access(rules.LayerKinds):
  """What channel analysis and rebuild need to know of Keras 3."""

  name = "Keras 3"
  # Keras 3 names a DepthwiseConv's kernel 'kernel' (tf_keras: 'depthwise_kernel').
  depthwise_kernel = "kernel"

  def __init__(self):
    super().__init__(_L)

  def is_operation(self, layer) -> bool:
    return (type(layer).__module__ == "keras.src.ops.numpy"
            and type(layer).__name__ in _SCALAR_OPS)

  def shape(self, tensor) -> Optional[Tuple[Optional[int], ...]]:
    return tuple(tensor.shape)

  def evaluate(self, fn, x: np.ndarray) -> Optional[np.ndarray]:
    try:
      return keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x)))
    except (ValueError, TypeError, NotImplementedError):
      return None

  def scalar_op(self, layer, args: tuple, kwargs: Dict[str, Any]
                ) -> Optional[bool]:
    """For ``x <op> constant``: whether it maps 0 to 0; None: not such an op."""
    fn = _SCALAR_OPS.get(type(layer).__name__)
    if (fn is None or kwargs or len(args) != 2 or not _is_tensor(args[0])
        or not isinstance(args[1], (int, float))):
      return None
    return fn(0.0, args[1]) == 0

  def blocker_reason(self, layer) -> str:
    kind = type(layer).__name__
    if isinstance(layer, _L.Lambda):
      return "a Lambda's function may depend on the channel count"
    if isinstance(layer, keras.Model):
      return "a nested model"
    if type(layer).__module__.startswith("keras."):
      return f"{kind} is not channel-wise or not supported"
    return "a custom layer or operation"

  def check_functional(self, model) -> None:
    functional(model)

  def is_graph_model(self, layer) -> bool:
    return False  # Counted as before: a nested Keras 3 model adds nothing.

  def nodes(self, model) -> list:
    """Every call of an operation in ``model``, inputs first, in graph order."""
    graph = functional(model)
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
      for node in graph._nodes_by_depth[depth]:
        args = () if node.is_input else tuple(node.arguments.args)
        kwargs = {} if node.is_input else dict(node.arguments.kwargs)
        nodes.append(Node(node.operation, list(node.input_tensors),
                          list(node.outputs), node.is_input, args, kwargs))
    return nodes

  def outputs(self, model) -> list:
    graph = functional(model)
    names = list(getattr(graph, "output_names", None) or
                 [t.name for t in graph.outputs])
    return list(zip(graph.outputs, names))

  def to_numpy(self, weight) -> np.ndarray:
    return keras.ops.convert_to_numpy(weight)

  def rebuild_graph(self, model, make_layer: Callable[[Any], Any]):
    """A new model of new layers (``make_layer(old)``) called as in ``model``.

    Returns:
      (the new functional model, {layer name: (old layer, new layer)}).
    """
    graph = functional(model)
    new_layers: Dict[str, Any] = {}
    tensors: Dict[int, Any] = {}
    for node in self.nodes(model):
      layer = node.layer
      if node.is_input:
        tensors[id(node.outs[0])] = type(layer).from_config(
            layer.get_config()).output
        continue
      if layer.name not in new_layers:
        new_layers[layer.name] = (layer, make_layer(layer))
      args, kwargs = keras.tree.map_structure(
          lambda t: tensors[id(t)] if _is_tensor(t) else t,
          (node.args, node.kwargs))
      outputs = new_layers[layer.name][1](*args, **kwargs)
      for old, new in zip(node.outs, keras.tree.flatten(outputs)):
        tensors[id(old)] = new
    narrow = keras.Model(
        keras.tree.map_structure(lambda t: tensors[id(t)], graph._inputs_struct),
        keras.tree.map_structure(lambda t: tensors[id(t)], graph._outputs_struct),
        name=model.name)
    return narrow, new_layers


ACCESS = Keras3Access()
