"""Which layers of a Keras 3 model the magnitude backend prunes, and copies of the model.

The weights tfmot's PruneRegistry names, found on a plain Keras 3 model (no
tfmot, no tf_keras); the walk, the M:N check and the layer patterns are
``training_common``'s, shared with the tf_keras backend.

Example:

    check_supported(model)
    layers = select_layers(model, include=["conv*"])   # ['conv1', 'conv2']
    variables = layer_variables(clone_model(model), layers)
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras

from tfx_compression.components.pruner import training_common
from tfx_compression.components.pruner.strategy import UnsupportedModelError


# Which layers can be pruned: the weights tfmot's PruneRegistry names.

_L = keras.layers
_KERNEL = ("kernel",)
_REGISTRY = {
    _L.Dense: _KERNEL, _L.Conv1D: _KERNEL, _L.Conv2D: _KERNEL,
    _L.Conv3D: _KERNEL, _L.Conv2DTranspose: _KERNEL,
    _L.Conv3DTranspose: _KERNEL, _L.SeparableConv1D: ("pointwise_kernel",),
    _L.SeparableConv2D: ("pointwise_kernel",), _L.Embedding: ("embeddings",),
}
_RNN = (_L.SimpleRNN, _L.LSTM, _L.GRU)
_MHA_DENSE = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def walk_layers(model):
  """Layers of a model, descending into nested models."""
  return training_common.walk_layers(model, keras.Model)


def prunable_weights(layer) -> list:
  """The weights tfmot would prune in ``layer`` ([] if none)."""
  if hasattr(layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  if type(layer) in _REGISTRY:
    return [getattr(layer, n) for n in _REGISTRY[type(layer)]
            if getattr(layer, n, None) is not None]
  if type(layer) in _RNN:
    cell = layer.cell
    return [cell.kernel, cell.recurrent_kernel]
  if type(layer) is _L.MultiHeadAttention:
    return [getattr(layer, n).kernel for n in _MHA_DENSE
            if getattr(layer, n, None) is not None]
  return []


def prunable_layers(model, m_by_n: Optional[Tuple[int, int]] = None
                   ) -> Dict[str, Any]:
  """Name -> layer for every layer with weights to prune (M:N blocks if given).

  The layers tfmot's registry supports (Dense, Conv, SeparableConv's pointwise
  kernel, Embedding, SimpleRNN/LSTM/GRU, MultiHeadAttention), or any layer with
  a ``get_prunable_weights()`` method.

  Example:

      list(prunable_layers(model))  # ['conv1', 'conv2', 'dense1', 'probabilities']
  """
  return training_common.prunable_layers(walk_layers(model), prunable_weights,
                                         m_by_n)


def select_layers(model, include: Sequence[str] = (),
                  exclude: Sequence[str] = (),
                  m_by_n: Optional[Tuple[int, int]] = None) -> List[str]:
  """Names of the layers to prune, from fnmatch patterns on layer names.

  Same arguments, rules, messages and example as
  ``keras2_magnitude.select_layers``.

  Raises:
    ValueError: a pattern matches no prunable layer, or nothing is left.
  """
  check_supported(model)
  return training_common.select_layers(
      lambda blocks: prunable_layers(model, blocks), include, exclude, m_by_n)


def _is_graph_model(model) -> bool:
  from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top
  return isinstance(model, (keras.Sequential, Functional))


def check_supported(model) -> None:
  """Raises UnsupportedModelError unless ``model`` is a Keras 3 graph model.

  Masks need no wrapping, but :func:`clone_model` must rebuild the model, which
  Keras does for Sequential and functional models only.
  """
  if not isinstance(model, keras.Model):
    raise UnsupportedModelError(
        f"The model is a {type(model).__name__} ({type(model).__module__}), "
        "not a Keras 3 Model; this pruning backend needs a Keras 3 functional "
        "or Sequential model (tf_keras models go through pruning.prune_model).")
  if _is_graph_model(model):
    return
  layers = [f"{l.name} ({type(l).__name__})" for l in model.layers]
  can = [l.name for l in model.layers if prunable_weights(l)]
  raise UnsupportedModelError(
      f"The model is a subclassed Keras model ({type(model).__name__}), which "
      "the Pruner cannot clone: only Sequential and functional models can be "
      f"rebuilt. Its layers: {layers or 'none tracked'}; of these prunable: "
      f"{can or 'none'}. Build the model with the functional API "
      "(keras.Model(inputs, outputs)) or keras.Sequential in the Trainer "
      "module.")


def clone_model(model):
  """A copy with the same weights (new layer objects and variables)."""
  check_supported(model)
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


def layer_variables(model, layers: Sequence[str]) -> list:
  """The prunable weights (variables) of the named layers, in order.

  Raises:
    ValueError: a name is not a layer of ``model``.
  """
  by_name = {l.name: l for l in walk_layers(model)}
  missing = [n for n in layers if n not in by_name]
  if missing:
    raise ValueError(f"`layers` {missing} are not layers of model "
                     f"'{model.name}' (its layers: {sorted(by_name)}).")
  return [w for n in layers for w in prunable_weights(by_name[n])]
