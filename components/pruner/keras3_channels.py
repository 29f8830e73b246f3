"""Channel pruning of a Keras 3 functional model: whole filters and neurons removed.

The Keras 3 backend of ``keras2_channels`` (tf_keras): the same three steps and
the same choices, on Keras 3's functional graph.

1. :func:`analyze` walks the graph (``Functional._nodes_by_depth``; a Sequential
   model through its functional twin) and follows every output channel of the
   Dense / Conv1D/2D/3D / SeparableConv1D/2D layers through BatchNormalization,
   DepthwiseConv, pooling, activations, Dropout, Flatten -> Dense, a Reshape that
   keeps the channel axis, Concatenate and the joins (Add, Multiply, ...). It
   fills the backend-independent :class:`channel_graph.ChannelGraph` (union-find
   of channels), so the choice of channels is ``channel_choice``'s, shared with
   tf_keras: L1/L2 filter norms, per-layer or global ranking, removal targets.
2. Gradual masking during fine-tuning: at the steps of
   ``schedules.schedule_steps`` the weakest channels are masked to zero
   (producing kernel slice and bias, BatchNormalization gamma/beta/moving mean,
   DepthwiseConv slices), so a masked channel is zero everywhere downstream.
3. :func:`rebuild_narrow` builds a new Keras 3 functional model from the layer
   configs with the kept weight slices: it computes what the wide model with
   those channels zeroed computes. It is then fine-tuned (cosine to zero).

Public API (keyword names as ``keras2_channels``):

    analyze(model, layer_filter=None, explicit_layers=None) -> ChannelGraph
    select_channels(model, graph, target_sparsity, ranking, norm) -> {layer: kept}
    weight_masks(graph, dropped), zero_channels(model, graph, kept)
    rebuild_narrow(graph, kept, model=None) -> keras.Model
    count_macs(model) -> int
    prune_channels(model, train_ds, *, target_sparsity, ranking, norm,
                   layer_filter, explicit_layers, train_steps, finetune_steps,
                   begin_step, end_step, frequency, learning_rate, loss, seed,
                   eval_ds, original_channels) -> ChannelPruneResult

Example:

    result = prune_channels(model, train_ds, target_sparsity=0.75,
                            train_steps=300, finetune_steps=150, loss=loss)
    result.model.save("/tmp/narrow.keras")
"""

import contextlib
import dataclasses
import math
from typing import Any, Callable, Collection, Dict, Mapping, Optional, Sequence

from absl import logging
import keras
import numpy as np

from tfx_compression.components.common import progress
from tfx_compression.components.pruner import channel_choice as choice
from tfx_compression.components.pruner import keras3_magnitude
from tfx_compression.components.common import distillation
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner.channel_choice import select_channels  # noqa: F401
from tfx_compression.components.pruner.channel_graph import ChannelGraph
from tfx_compression.components.pruner.channel_graph import ChannelPruningError

# Keras 3 has no public API for the functional graph: it is read through
# Functional._nodes_by_depth, _inputs_struct/_outputs_struct and Node.arguments;
# ChannelGraph's union-find is filled through its _uf, as channel_graph does.
# pylint: disable=protected-access

_L = keras.layers
_DENSE = (_L.Dense,)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
PRODUCER_TYPES = _DENSE + (_L.Conv1D, _L.Conv2D, _L.Conv3D) + _SEPARABLE
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_PASSTHROUGH = tuple(getattr(_L, n) for n in (
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "ActivityRegularization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D",
    "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "RepeatVector", "Identity") if hasattr(_L, n))
_ELEMENTWISE = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Softmax,
                _L.Rescaling)
_JOIN = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
# Keras 3 names a DepthwiseConv's kernel 'kernel' (tf_keras: 'depthwise_kernel').
_DEPTHWISE_KERNEL = "kernel"


@dataclasses.dataclass
class ChannelPruneResult:
  """What :func:`prune_channels` returns (the fields of keras2_channels').

  Attributes:
    model: the narrow Keras 3 functional model, fine-tuned and compiled.
    info: channels_kept, channels_before, channels_input, channel_sparsity,
      params_before/after, macs_before/after, skipped, target_sparsity,
      ranking, norm, and eval_loss when ``eval_ds`` was given.
  """
  model: Any
  info: Dict[str, Any]


# --------------------------------------------------------------------------
# The functional graph.
# --------------------------------------------------------------------------


def _functional(model):
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


def _nodes(functional) -> list:
  nodes = []
  for depth in sorted(functional._nodes_by_depth, reverse=True):
    nodes.extend(functional._nodes_by_depth[depth])
  return nodes


def _width(tensor) -> Optional[int]:
  return tensor.shape[-1] if len(tensor.shape) else None


def _short(weight) -> str:
  return weight.name.split("/")[-1]


def _weights(model, name: str) -> Dict[str, np.ndarray]:
  return {_short(w): keras.ops.convert_to_numpy(w)
          for w in model.get_layer(name).weights}


def _maps_zero_to_zero(fn: Callable[[Any], Any]) -> bool:
  try:
    out = keras.ops.convert_to_numpy(fn(keras.ops.zeros((1, 3))))
    return bool(np.all(out == 0))
  except (ValueError, TypeError, NotImplementedError):
    return False


def _channels_last(layer) -> bool:
  return getattr(layer, "data_format", "channels_last") in (None,
                                                            "channels_last")


@dataclasses.dataclass
class _Call:
  graph: ChannelGraph
  layer: Any
  ins: list
  outs: list
  in_ids: list
  candidate: bool
  output_name: Optional[str]

  @property
  def single(self) -> bool:
    return len(self.ins) == 1 and len(self.outs) == 1

  @property
  def x_ids(self):
    return self.in_ids[0] if self.in_ids else None

  def register(self, kind: str) -> None:
    self.graph.kinds[self.layer.name] = kind
    self.graph.register_input(self.layer.name, self.x_ids)


def _producer(call: _Call):
  from tfx_compression.components.pruner.channel_graph import _Producer  # pylint: disable=g-import-not-at-top
  layer, graph, name = call.layer, call.graph, call.layer.name
  blocked, out_ids = None, None
  if not _channels_last(layer):
    blocked = f"data_format={layer.data_format!r}, not channels_last"
  elif getattr(layer, "groups", 1) != 1:
    blocked = f"a grouped convolution (groups={layer.groups})"
  elif not call.single:
    blocked = f"called on {len(call.ins)} tensors"
  else:
    call.register("producer")
    if call.candidate:
      act = getattr(layer, "activation", None)
      if call.output_name is not None:
        graph.skipped[name] = f"it produces the model output '{call.output_name}'"
      elif act is not None and not _maps_zero_to_zero(act):
        graph.skipped[name] = (
            f"its activation {getattr(act, '__name__', act)!r} does not map 0 "
            "to 0, so a removed channel would not be zero")
      else:
        if name not in graph.producers:
          width = layer.units if type(layer) in _DENSE else layer.filters
          graph.producers[name] = _Producer(
              name, graph._uf.add(width),
              "pointwise_kernel" if type(layer) in _SEPARABLE else "kernel")
        out_ids = graph.producers[name].ids
  if blocked and call.candidate:
    graph.skipped[name] = f"it is {blocked}"
  return out_ids, blocked


def _depthwise(call: _Call):
  if not call.single or not _channels_last(call.layer):
    return None, "DepthwiseConv with channels_first data or several inputs"
  call.register("depthwise")
  if call.x_ids is None:
    return None, None
  return np.repeat(call.x_ids, call.layer.depth_multiplier), None


def _batchnorm(call: _Call):
  rank = len(call.ins[0].shape) if call.ins else None
  axes = list(np.atleast_1d(call.layer.axis))
  if not call.single or axes not in ([-1], [rank - 1]):
    return None, f"normalizes over axis {call.layer.axis}, not the channel axis"
  call.register("batchnorm")
  return call.x_ids, None


def _prelu(call: _Call):
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  call.register("prelu")
  return call.x_ids, None


def _reshape(call: _Call):
  width = _width(call.ins[0]) if call.ins else None
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  if call.x_ids is not None and (tuple(call.layer.target_shape)[-1] != width
                                 or _width(call.outs[0]) != width):
    return None, ("it reshapes the channel axis (a Reshape that hard-codes the "
                  "channel count)")
  call.register("reshape")
  return call.x_ids, None


def _channelwise(call: _Call):
  layer = call.layer
  if not call.single or not _channels_last(layer):
    return None, "several inputs or channels_first data"
  if type(layer) in _ELEMENTWISE and not _elementwise_ok(layer):
    return None, "it does not map 0 to 0 channel by channel"
  if _width(call.outs[0]) != _width(call.ins[0]):
    return None, "it changes the channel axis"
  return call.x_ids, None


def _elementwise_ok(layer) -> bool:
  if isinstance(layer, _L.Rescaling) and (np.ndim(layer.scale)
                                          or np.ndim(layer.offset)):
    return False
  return _maps_zero_to_zero(layer)


def _flatten(call: _Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if call.x_ids is None:
    return None, None
  shape = call.ins[0].shape
  if any(d is None for d in shape[1:-1]):
    return None, f"its input shape {shape} is not fully known"
  return np.tile(call.x_ids, int(np.prod(shape[1:-1], dtype=np.int64))), None


def _concatenate(call: _Call):
  rank = len(call.outs[0].shape)
  if len(call.outs) != 1 or call.layer.axis not in (-1, rank - 1):
    return None, f"it concatenates along axis {call.layer.axis}, not channels"
  parts = []
  for t, ids in zip(call.ins, call.in_ids):
    if ids is None:
      if _width(t) is None:
        return None, f"input {t.name} has an unknown channel count"
      ids = np.zeros(_width(t), np.int64)  # Made by no pruned layer: fixed.
    parts.append(ids)
  return np.concatenate(parts), None


def _join(call: _Call):
  widths = {_width(t) for t in call.ins}
  if len(call.outs) != 1 or len(widths) != 1 or None in widths:
    return None, ("it joins tensors of different or unknown channel counts "
                  f"{sorted(map(str, widths))}")
  first = next(i for i in call.in_ids if i is not None)
  for ids in call.in_ids:
    if ids is None:
      call.graph.fix(first, f"'{call.layer.name}' ({type(call.layer).__name__})"
                     " joins them with a tensor no pruned layer produces (e.g. "
                     "a model input)")
    elif ids is not first:
      call.graph.tie(first, ids)
  call.graph.record_join(call.layer.name,
                         [i for i in call.in_ids if i is not None])
  return first, None


def _blocker_reason(layer) -> str:
  kind = type(layer).__name__
  if isinstance(layer, _L.Lambda):
    return "a Lambda's function may depend on the channel count"
  if isinstance(layer, keras.Model):
    return "a nested model"
  if type(layer).__module__.startswith("keras."):
    return f"{kind} is not channel-wise or not supported"
  return "a custom layer or operation"


def _table(*rules):
  return {kind: rule for kinds, rule in rules for kind in kinds}


_RULES = _table((PRODUCER_TYPES, _producer), (_DEPTHWISE, _depthwise),
                ((_L.BatchNormalization,), _batchnorm), ((_L.PReLU,), _prelu),
                ((_L.Reshape,), _reshape))
_FLOWING_RULES = _table((_PASSTHROUGH + _ELEMENTWISE, _channelwise),
                        ((_L.Flatten,), _flatten),
                        ((_L.Concatenate,), _concatenate), (_JOIN, _join))


def _check_explicit(model, explicit: Collection[str]) -> None:
  names = {layer.name for layer in model.layers}
  unknown = sorted(set(explicit) - names)
  if unknown:
    raise ChannelPruningError(
        f"Layers {unknown} named for channel pruning are not in model "
        f"'{model.name}' (its layers: {sorted(names)}).")
  for layer in model.layers:
    if layer.name in explicit and type(layer) not in PRODUCER_TYPES:
      raise ChannelPruningError(
          f"Layer '{layer.name}' is a {type(layer).__name__}; channel pruning "
          "removes output channels of Dense, Conv1D, Conv2D, Conv3D and "
          "SeparableConv1D/2D layers only. Remove it from the layer selection.")


def analyze(model, layer_filter: Optional[Callable[[Any], bool]] = None,
            explicit_layers: Optional[Collection[str]] = None) -> ChannelGraph:
  """Finds the output channels of the Keras 3 ``model`` that may be removed.

  Same arguments, rules and errors as ``channel_graph.analyze`` (tf_keras).

  Example:

      graph = analyze(model, layer_filter=lambda l: l.name != "stem")
      graph.prunable_layers()   # ['conv2', 'dense1']
  """
  functional = _functional(model)
  explicit = set(explicit_layers or ())
  _check_explicit(model, explicit)
  graph = ChannelGraph(model)
  ids_of: Dict[int, Optional[np.ndarray]] = {}
  output_names = list(getattr(functional, "output_names", None) or
                      [t.name for t in functional.outputs])
  model_outputs = {id(t): n for t, n in zip(functional.outputs, output_names)}

  def candidate(layer) -> bool:
    return layer.name in explicit or layer_filter is None or bool(
        layer_filter(layer))

  for node in _nodes(functional):
    outs = list(node.outputs)
    if node.is_input:
      for t in outs:
        ids_of[id(t)] = None
      continue
    layer, ins = node.operation, list(node.input_tensors)
    in_ids = [ids_of.get(id(t)) for t in ins]
    rule = _RULES.get(type(layer))
    out_ids, blocked = None, None
    if rule is not None or any(i is not None for i in in_ids):
      rule = rule or _FLOWING_RULES.get(type(layer),
                                        lambda c: (None, _blocker_reason(c.layer)))
      out_ids, blocked = rule(_Call(graph, layer, ins, outs, in_ids,
                                    candidate(layer),
                                    model_outputs.get(id(outs[0]))))
    if blocked is not None:
      for ids in in_ids:
        graph.fix(ids, f"they feed {type(layer).__name__} layer "
                  f"'{layer.name}', which the rebuild cannot follow ({blocked})")
      out_ids = None
    for t in outs:
      ids_of[id(t)] = out_ids if len(outs) == 1 else None
  for t, out_name in zip(functional.outputs, output_names):
    graph.fix(ids_of.get(id(t)),
              f"their channels reach the model output '{out_name}'")
  graph.finish()
  _check_result(graph, model, explicit)
  return graph


def _check_result(graph: ChannelGraph, model, explicit) -> None:
  blocked = {n: r for n, r in graph.skipped.items() if n in explicit}
  if blocked:
    name, reason = next(iter(blocked.items()))
    raise ChannelPruningError(
        f"Layer '{name}' was named for channel pruning, but none of its "
        f"channels can be removed: {reason}. Remove it from the layer "
        "selection, or use sparsity_structure='unstructured' for it.")
  if not graph.components:
    detail = "; ".join(f"'{n}': {r}" for n, r in graph.skipped.items())
    raise ChannelPruningError(
        f"Model '{model.name}' has no layer whose channels can be removed "
        f"({detail or 'no selected Dense/Conv/SeparableConv layer'}). Channel "
        "pruning removes output channels of Dense, Conv1D/2D/3D and "
        "SeparableConv1D/2D layers that do not produce a model output; use "
        "sparsity_structure='unstructured' for this model.")


# --------------------------------------------------------------------------
# Masks and the narrow rebuild.
# --------------------------------------------------------------------------


def weight_masks(graph: ChannelGraph, dropped: np.ndarray) -> Dict[Any, np.ndarray]:
  """(layer, weight) -> 0/1 mask broadcastable to that weight.

  The producing kernel slice and bias, and the per-channel parameters of the
  BatchNormalization and DepthwiseConv layers the channels feed.
  """
  masks = {}
  model = graph.model
  for name in graph.prunable_layers():
    keep = (~dropped[graph.producers[name].ids]).astype(np.float32)
    for w in model.get_layer(name).weights:
      s = _short(w)
      if s in ("kernel", "pointwise_kernel"):
        masks[(name, s)] = keep.reshape((1,) * (len(w.shape) - 1) + (-1,))
      elif s == "bias":
        masks[(name, s)] = keep
  for name, kind in graph.kinds.items():
    ids = graph.input_ids.get(name)
    if ids is None or kind not in ("batchnorm", "depthwise") or not ids.any():
      continue
    keep = (~dropped[ids]).astype(np.float32)
    layer = model.get_layer(name)
    for w in layer.weights:
      s = _short(w)
      if kind == "batchnorm" and s in ("gamma", "beta", "moving_mean"):
        masks[(name, s)] = keep
      elif kind == "depthwise" and s == _DEPTHWISE_KERNEL:
        masks[(name, s)] = keep.reshape((1,) * (len(w.shape) - 2) + (-1, 1))
      elif kind == "depthwise" and s == "bias":
        masks[(name, s)] = np.repeat(keep, layer.depth_multiplier)
  return masks


def zero_channels(model, graph: ChannelGraph,
                  kept: Mapping[str, Sequence[int]]) -> None:
  """Zeroes, in place, the channels not in ``kept`` (the 'masked wide' model)."""
  dropped = choice.dropped_from_kept(graph, kept)
  for (name, s), mask in weight_masks(graph, dropped).items():
    for w in model.get_layer(name).weights:
      if _short(w) == s:
        w.assign(keras.ops.convert_to_numpy(w) * mask)


def _slice(kind: str, layer, w: Dict[str, np.ndarray], in_idx, out_idx):
  """The kept slices of one layer's weights."""
  w = dict(w)
  if kind == "producer":
    if type(layer) in _SEPARABLE:
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
    w[_DEPTHWISE_KERNEL] = w[_DEPTHWISE_KERNEL][..., in_idx, :]
    if "bias" in w:
      w["bias"] = w["bias"][(in_idx[:, None] * mult + np.arange(mult)).ravel()]
  elif kind == "prelu" and in_idx is not None and w["alpha"].shape[-1] != 1:
    w["alpha"] = w["alpha"][..., in_idx]
  return w


def _narrow_layer(graph: ChannelGraph, layer, dropped: np.ndarray):
  config = layer.get_config()
  name = layer.name
  if name in graph.producers and name not in graph.skipped:
    n = int((~dropped[graph.producers[name].ids]).sum())
    config["units" if type(layer) in _DENSE else "filters"] = n
  elif graph.kinds.get(name) == "reshape" and graph.input_ids.get(name) is not None:
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


def rebuild_narrow(graph: ChannelGraph, kept: Mapping[str, Sequence[int]],
                   model=None):
  """A new Keras 3 functional model without the channels missing from ``kept``.

  ``{}`` gives an exact copy (new layers, copied weights). Weights come from
  ``model`` (default ``graph.model``), a model of the same architecture.

  Example:

      narrow = rebuild_narrow(graph, {"conv1": [0, 2, 5], "dense1": range(64)})
  """
  model = graph.model if model is None else model
  functional = _functional(model)
  dropped = choice.dropped_from_kept(graph, kept)
  new_layers: Dict[str, Any] = {}
  tensors: Dict[int, Any] = {}
  is_tensor = lambda t: isinstance(t, keras.KerasTensor)
  for node in _nodes(functional):
    layer = node.operation
    if node.is_input:
      tensors[id(node.outputs[0])] = type(layer).from_config(
          layer.get_config()).output
      continue
    if layer.name not in new_layers:
      new_layers[layer.name] = _narrow_layer(graph, layer, dropped)
    args, kwargs = keras.tree.map_structure(
        lambda t: tensors[id(t)] if is_tensor(t) else t,
        (node.arguments.args, node.arguments.kwargs))
    outputs = new_layers[layer.name](*args, **kwargs)
    for old, new in zip(node.outputs, keras.tree.flatten(outputs)):
      tensors[id(old)] = new
  narrow = keras.Model(
      keras.tree.map_structure(lambda t: tensors[id(t)], functional._inputs_struct),
      keras.tree.map_structure(lambda t: tensors[id(t)], functional._outputs_struct),
      name=model.name)
  for name, new in new_layers.items():
    old = model.get_layer(name)
    kind = graph.kinds.get(name)
    if kind is None or not old.weights:
      new.set_weights(old.get_weights())
      continue
    ids = graph.input_ids.get(name)
    in_idx = None if ids is None else np.where(~dropped[ids])[0]
    out_idx = None
    if name in graph.producers and name not in graph.skipped:
      out_idx = np.where(~dropped[graph.producers[name].ids])[0]
    sliced = _slice(kind, old, _weights(model, name), in_idx, out_idx)
    new.set_weights([sliced[_short(w)] for w in new.weights])
  return narrow


def count_macs(model) -> int:
  """Multiply-adds of one example through Dense and convolution layers."""
  total = 0
  for node in _nodes(_functional(model)):
    layer = node.operation
    if node.is_input or not isinstance(layer, PRODUCER_TYPES + _DEPTHWISE +
                                       _TRANSPOSED):
      continue
    ref = (node.input_tensors[0] if isinstance(layer, _TRANSPOSED)
           else node.outputs[0])
    positions = int(np.prod([d or 1 for d in ref.shape[1:-1]], dtype=np.int64))
    for w in layer.weights:
      if _short(w) in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        total += int(np.prod(w.shape)) * positions
  return int(total)


# --------------------------------------------------------------------------
# Gradual pruning and the end-to-end function.
# --------------------------------------------------------------------------


def _check_steps(**steps) -> None:
  for name, value in steps.items():
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f"`{name}` must be an int, got {type(value).__name__} "
                      f"{value!r}.")
    low = 1 if name == "frequency" else 0
    if value < low:
      raise ValueError(f"`{name}` must be >= {low}, got {value}.")


class _GradualChannelPruning(keras.callbacks.Callback):
  """Masks the weakest channels at scheduled steps; keeps them zero after each step."""

  def __init__(self, graph, classes, targets, schedule, norm):
    super().__init__()
    self._graph = graph
    self._classes = classes
    self._targets = targets
    self._schedule = schedule
    self._norm = norm
    self._step = 0
    self.dropped = np.zeros(len(graph.roots), bool)
    self._pairs = None
    self._apply = None

  def _bind(self):
    pairs = []
    ones = weight_masks(self._graph, np.zeros(len(self._graph.roots), bool))
    for key, init in ones.items():
      name, s = key
      var = next(w for w in self.model.get_layer(name).weights
                 if _short(w) == s)
      pairs.append((key, var, keras.Variable(init.astype(var.dtype),
                                             trainable=False)))
    self._pairs = pairs
    self._apply = self._apply_masks
    if keras.backend.backend() == "tensorflow":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._apply = tf.function(self._apply_masks)

  def _apply_masks(self):
    for _, var, mask in self._pairs:
      var.assign(keras.ops.multiply(var, mask))

  def update(self, fraction: float):
    if self._pairs is None:
      self._bind()
    targets = {k: int(math.floor(fraction * v + 0.5))
               for k, v in self._targets.items()}
    norms = choice.channel_norms(self.model, self._graph, self._norm)
    self.dropped = choice.choose(self._graph, self._classes, norms, targets,
                                 self.dropped)
    masks = weight_masks(self._graph, choice.expand(self._graph, self.dropped))
    for key, var, mask in self._pairs:
      mask.assign(masks[key].astype(var.dtype))
    self._apply()

  def on_train_batch_begin(self, batch, logs=None):
    fraction = self._schedule.get(self._step)
    if fraction is not None:
      self.update(fraction)

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._pairs is not None and self.dropped.any():
      self._apply()


def _fit(model, ds, steps: int, learning_rate: float, loss, parameter: str,
         callbacks=None, decay: bool = False) -> None:
  if decay and steps > 0:
    # Cosine to zero, as keras2_channels: the narrow model ends settled.
    learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate,
                                                           steps)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                metrics=distillation.train_metrics(loss))
  if steps <= 0:
    return
  if ds is None:
    raise ValueError(f"`train_ds` is None, but `{parameter}`={steps} steps of "
                     "training need it.")
  model.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0,
            callbacks=list(callbacks or []) + [progress.keras_callback(
                progress.Progress(f"fine-tuning ({parameter})", steps), keras)])


def prune_channels(model, train_ds, *, target_sparsity: float,
                   ranking: str = "per_layer", norm: str = "l1",
                   layer_filter: Optional[Callable[[Any], bool]] = None,
                   explicit_layers: Optional[Collection[str]] = None,
                   train_steps: int, finetune_steps: int, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   frequency: Optional[int] = None,
                   learning_rate: float = 1e-3, loss: Any,
                   seed: Optional[int] = 0, eval_ds=None,
                   original_channels: Optional[Mapping[str, int]] = None
                   ) -> ChannelPruneResult:
  """Removes whole filters and neurons of a Keras 3 model, then fine-tunes it.

  Same arguments, steps and result as ``keras2_channels.prune_channels``:
  ``model`` is never modified; a copy is fine-tuned for ``train_steps`` while
  the weakest channels are masked on the schedule, the narrow model is rebuilt
  and fine-tuned for ``finetune_steps``.

  Example:

      r1 = prune_channels(model, ds, target_sparsity=0.5, train_steps=200,
                          finetune_steps=100, loss=loss)
      r2 = prune_channels(r1.model, ds, target_sparsity=0.7, train_steps=200,
                          finetune_steps=100, loss=loss,
                          original_channels=r1.info["channels_before"])

  Raises:
    ChannelPruningError: see :func:`analyze` and ``channel_choice.removal_targets``.
    ValueError, TypeError: bad arguments, naming the parameter.
  """
  choice.check_sparsity(target_sparsity)
  choice.check_choice("ranking", ranking, choice.RANKINGS)
  choice.check_choice("norm", norm, choice.NORMS)
  _check_steps(train_steps=train_steps, finetune_steps=finetune_steps,
               begin_step=begin_step, end_step=end_step, frequency=frequency)
  schedule = schedules.schedule_steps(train_steps, begin_step, end_step,
                                      frequency)
  graph = analyze(model, layer_filter, explicit_layers)
  targets = choice.removal_targets(graph, target_sparsity, ranking,
                                   original_channels)
  classes = choice.channel_classes(graph)
  logging.info("Channel pruning %s to sparsity %s (%s, %s): %s.",
               graph.prunable_layers(), target_sparsity, ranking, norm,
               graph.channel_counts())
  # Seeded and with deterministic ops, as keras3_magnitude: same seed and data,
  # same weights on CPU (without it, two runs differed in the 2nd decimal).
  with (contextlib.nullcontext() if seed is None
        else keras3_magnitude.deterministic(seed)):
    work = rebuild_narrow(graph, {})
    callback = _GradualChannelPruning(graph, classes, targets, schedule, norm)
    if train_steps > 0:
      _fit(work, train_ds, train_steps, learning_rate, loss, "train_steps",
           callbacks=[callback])
    final = choice.choose(graph, classes,
                          choice.channel_norms(work, graph, norm), targets,
                          callback.dropped)
    kept = choice.kept_from_dropped(graph, choice.expand(graph, final))
    narrow = rebuild_narrow(graph, kept, model=work)
    _fit(narrow, train_ds, finetune_steps, learning_rate, loss,
         "finetune_steps", decay=True)

  before = graph.channel_counts()
  reference = {n: int((original_channels or {}).get(n, c))
               for n, c in before.items()}
  channels_kept = {n: int(v.size) for n, v in kept.items()}
  info = {
      "channels_kept": channels_kept,
      "channels_before": reference,
      "channels_input": before,
      "channel_sparsity": 1.0 - sum(channels_kept.values()) / max(
          1, sum(reference.values())),
      "params_before": int(model.count_params()),
      "params_after": int(narrow.count_params()),
      "macs_before": count_macs(model),
      "macs_after": count_macs(narrow),
      "skipped": dict(graph.skipped),
      "target_sparsity": float(target_sparsity),
      "ranking": ranking,
      "norm": norm,
  }
  if eval_ds is not None:
    info["eval_loss"] = float(narrow.evaluate(eval_ds, verbose=0))
  logging.info("Channel pruning kept %s; params %d -> %d, MACs %d -> %d.",
               channels_kept, info["params_before"], info["params_after"],
               info["macs_before"], info["macs_after"])
  return ChannelPruneResult(narrow, info)
