"""The narrow model: channel masks on the wide model, the rebuild without them, MACs.

:func:`rebuild_narrow` builds a new functional model from the layer configs and
copies the kept weight slices; before fine-tuning it computes exactly what the
wide model with those channels zeroed (:func:`zero_channels`) computes. Written
once for both Kerases: what differs (walking and re-calling the graph, weight
names) is asked of the graph's access object (``keras2_channel_access`` /
``keras3_channel_access``).

Example:

    graph = channel_graph.analyze(model)
    narrow = rebuild_narrow(graph, {"conv1": [0, 2, 5], "dense1": range(64)})
"""

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfx_compression.components.pruner.channel_choice import dropped_from_kept
from tfx_compression.components.pruner.channel_graph import ChannelGraph
from tfx_compression.components.pruner.channel_graph import ChannelPruningError
from tfx_compression.components.pruner.channel_graph import short_name

def _keep_index(ids: Optional[np.ndarray], dropped: np.ndarray) -> Optional[np.ndarray]:
  if ids is None:
    return None
  return np.where(~dropped[ids])[0]


def weight_masks(graph: ChannelGraph, dropped: np.ndarray
                 ) -> Dict[Tuple[str, str], np.ndarray]:
  """(layer, weight) -> 0/1 mask broadcastable to that weight.

  Covers the producing kernel slice and bias, and the per-channel parameters
  of BatchNormalization and DepthwiseConv layers fed by pruned channels, so a
  masked channel is exactly zero wherever it flows.
  """
  masks = {}
  # One dict, not model.get_layer's search through the layers per name.
  layers = {layer.name: layer for layer in graph.model.layers}
  depthwise_kernel = graph.access.depthwise_kernel
  for name in graph.prunable_layers():
    keep = (~dropped[graph.producers[name].ids]).astype(np.float32)
    for w in layers[name].weights:
      s = short_name(w)
      if s in ("kernel", "pointwise_kernel"):
        masks[(name, s)] = keep.reshape((1,) * (len(w.shape) - 1) + (-1,))
      elif s == "bias":
        masks[(name, s)] = keep
  for name, kind in graph.kinds.items():
    ids = graph.input_ids.get(name)
    if ids is None or kind not in ("batchnorm", "depthwise") or not ids.any():
      continue
    keep = (~dropped[ids]).astype(np.float32)
    layer = layers[name]
    for w in layer.weights:
      s = short_name(w)
      if kind == "batchnorm" and s in ("gamma", "beta", "moving_mean"):
        masks[(name, s)] = keep
      elif kind == "depthwise" and s == depthwise_kernel:
        masks[(name, s)] = keep.reshape((1,) * (len(w.shape) - 2) + (-1, 1))
      elif kind == "depthwise" and s == "bias":
        masks[(name, s)] = np.repeat(keep, layer.depth_multiplier)
  return masks


def zero_channels(model, graph: ChannelGraph,
                  kept: Mapping[str, Sequence[int]]) -> None:
  """Zeroes, in place, the channels not in ``kept`` (the 'zeroed wide' model).

  The narrow model from :func:`rebuild_narrow` computes the same outputs.
  """
  dropped = dropped_from_kept(graph, kept)
  for (name, s), mask in weight_masks(graph, dropped).items():
    for w in model.get_layer(name).weights:
      if short_name(w) == s:
        w.assign(graph.access.to_numpy(w) * mask)


def _slice_weights(access, kind: str, layer, weights: Dict[str, np.ndarray],
                   in_idx: Optional[np.ndarray], out_idx: Optional[np.ndarray]
                   ) -> Dict[str, np.ndarray]:
  """The kept slices of one layer's weights."""
  w = dict(weights)
  if kind == "producer":
    if access.kind(layer) == "separable":
      mult = layer.depth_multiplier
      if in_idx is not None:
        w["depthwise_kernel"] = w["depthwise_kernel"][..., in_idx, :]
        rows = (in_idx[:, None] * mult + np.arange(mult)).ravel()
        w["pointwise_kernel"] = w["pointwise_kernel"][..., rows, :]
      if out_idx is not None:
        w["pointwise_kernel"] = w["pointwise_kernel"][..., out_idx]
    else:
      if in_idx is not None:
        w["kernel"] = np.take(w["kernel"], in_idx, axis=-2)
      if out_idx is not None:
        w["kernel"] = w["kernel"][..., out_idx]
    if out_idx is not None and "bias" in w:
      w["bias"] = w["bias"][out_idx]
  elif kind == "batchnorm" and in_idx is not None:
    w = {k: v[in_idx] for k, v in w.items()}
  elif kind == "depthwise" and in_idx is not None:
    mult = layer.depth_multiplier
    k = access.depthwise_kernel
    w[k] = w[k][..., in_idx, :]
    if "bias" in w:
      w["bias"] = w["bias"][(in_idx[:, None] * mult + np.arange(mult)).ravel()]
  elif kind == "prelu" and in_idx is not None:
    if w["alpha"].shape[-1] != 1:
      w["alpha"] = w["alpha"][..., in_idx]
  return w


def rebuild_narrow(graph: ChannelGraph, kept: Mapping[str, Sequence[int]],
                   model=None):
  """A new functional model without the channels missing from ``kept``.

  Example:

      narrow = rebuild_narrow(graph, {"conv1": [0, 2, 5], "dense1": range(64)})

  Args:
    graph: from :func:`analyze` on a model of this architecture.
    kept: layer -> output channels to keep; a prunable layer not listed keeps
      all. ``{}`` gives an exact copy (new layers, copied weights).
    model: where the weights come from; default ``graph.model``.

  Returns:
    A new tf_keras functional model (never sharing layers with ``model``), with
    the same input and output names and structure.
  """
  model = graph.model if model is None else model
  access = graph.access
  access.check_functional(model)
  dropped = dropped_from_kept(graph, kept)
  narrow, new_layers = access.rebuild_graph(
      model, lambda layer: _narrow_layer(graph, layer, dropped))
  for name, (old, new) in new_layers.items():
    kind = graph.kinds.get(name)
    if not getattr(old, "weights", None):
      continue  # Nothing to copy (Keras 3 operations have no weights at all).
    if kind is None:
      new.set_weights(old.get_weights())
      continue
    in_idx = _keep_index(graph.input_ids.get(name), dropped)
    out_idx = None
    if name in graph.producers and name not in graph.skipped:
      out_idx = np.where(~dropped[graph.producers[name].ids])[0]
    weights = {short_name(w): access.to_numpy(w) for w in old.weights}
    sliced = _slice_weights(access, kind, old, weights, in_idx, out_idx)
    new.set_weights([sliced[short_name(w)] for w in new.weights])
  return narrow


def _narrow_layer(graph: ChannelGraph, layer, dropped: np.ndarray):
  config = layer.get_config()
  name = layer.name
  if name in graph.producers and name not in graph.skipped:
    n = int((~dropped[graph.producers[name].ids]).sum())
    config["units" if graph.access.kind(layer) == "dense" else "filters"] = n
  elif (graph.kinds.get(name) == "reshape"
        and graph.input_ids.get(name) is not None):
    n = int((~dropped[graph.input_ids[name]]).sum())
    config["target_shape"] = tuple(config["target_shape"][:-1]) + (n,)
  try:
    return type(layer).from_config(config)
  except (TypeError, ValueError, NotImplementedError) as e:
    raise ChannelPruningError(
        f"Layer '{name}' ({type(layer).__name__}) cannot be re-created from "
        f"its config for the narrow model: {type(e).__name__}: {e}. Custom "
        "layers need get_config/from_config; or use "
        "sparsity_structure='unstructured'.") from e


# --------------------------------------------------------------------------
# Sizes.
# --------------------------------------------------------------------------


def count_macs(model, access=None) -> int:
  """Multiply-adds of one example through Dense and convolution layers.

  Kernel size times output positions (input positions for transposed
  convolutions); unknown spatial sizes count as 1; nested models are counted.
  ``access``: the model's Keras (default tf_keras, ``keras2_channel_access``).
  """
  if access is None:
    from tfx_compression.components.pruner import keras2_channel_access  # pylint: disable=g-import-not-at-top
    access = keras2_channel_access.ACCESS
  total = 0
  for node in access.nodes(model):
    layer = node.layer
    if node.is_input:
      continue
    if access.is_graph_model(layer):
      total += count_macs(layer, access)
      continue
    kind = access.mac_kind(layer)
    if kind is None:
      continue
    ref = node.ins[0] if kind == "transposed" else node.outs[0]
    positions = 1
    for d in (access.shape(ref) or ())[1:-1]:
      positions *= d or 1
    for w in layer.weights:
      if short_name(w) in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        total += int(np.prod(w.shape)) * positions
  return int(total)
