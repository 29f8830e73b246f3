"""Structured (channel) pruning: remove whole filters and neurons from a tf_keras model.

The pruned model is physically narrower (fewer filters, fewer units), so it is
smaller and faster on any CPU, with no sparse kernels needed. Three steps:

1. :func:`analyze` walks the functional graph and finds which output channels of
   Dense / Conv1D / Conv2D / Conv3D / SeparableConv1D / SeparableConv2D layers can be
   removed, following each channel through the layers that consume it
   (BatchNormalization, DepthwiseConv, pooling, activations, Dropout, Flatten ->
   Dense re-indexing, Reshape that keeps the channel axis, Concatenate offsets) and
   tying channels that Add / Subtract / Multiply / Average / Maximum / Minimum join,
   so joined tensors lose the same channels. A channel that reaches a model output
   or a layer the rebuild cannot follow (Lambda, TF-op layers, custom layers, a
   Reshape or Permute that moves the channel axis, LayerNormalization, ...) is kept.
2. Gradual pruning during fine-tuning: every ``frequency`` steps the weakest
   filters (L1 or L2 norm of the whole filter) are masked to zero, with the number
   of masked channels ramping like tfmot's PolynomialDecay (power 3). Masks zero
   the producing kernel slice and bias, and the per-channel parameters of what
   follows (BatchNormalization gamma/beta/moving mean, DepthwiseConv slices), so a
   masked channel is exactly zero everywhere downstream.
3. :func:`rebuild_narrow` builds a new, narrower functional model from the layer
   configs and copies the kept weight slices; before fine-tuning it computes
   exactly what the wide model with those channels zeroed computes. It is then
   fine-tuned briefly.

Typical use (what the Pruner executor does):

    result = prune_channels(model, train_ds, target_sparsity=0.65,
                            train_steps=300, finetune_steps=150,
                            learning_rate=1e-3,
                            loss="sparse_categorical_crossentropy", seed=0)
    export_narrow_model(result.model, model, serving_dir, samples)
"""

import dataclasses
import math
from typing import (Any, Callable, Collection, Dict, List, Mapping, Optional,
                    Sequence, Tuple)

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import signatures as signatures_lib

# tf_keras has no public API for the functional graph: it is read through
# Model._nodes_by_depth, _input_layers, _nested_inputs/_nested_outputs.
# pylint: disable=protected-access

RANKINGS = ("per_layer", "global")
NORMS = ("l1", "l2")

_L = keras.layers
# Exact types: Conv1DTranspose subclasses Conv1D, DepthwiseConv2D subclasses Conv,
# and a user's subclass of Dense may do anything in call().
_DENSE = (_L.Dense,)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_PRODUCER_TYPES = _DENSE + _CONV + _SEPARABLE
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
# Channel-wise layers without weights that map 0 to 0 (for channels_last data).
_PASSTHROUGH = (
    _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
    _L.GaussianNoise, _L.GaussianDropout, _L.ActivityRegularization,
    _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D,
    _L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D,
    _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
    _L.GlobalMaxPooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
    _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D, _L.RepeatVector,
    _L.Identity)
# Element-wise layers, kept only if they map 0 to 0 (checked numerically).
_ELEMENTWISE = (_L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU,
                _L.ThresholdedReLU, _L.Softmax, _L.Rescaling)
_JOIN = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)
_FIXED = 0  # Union-find id of "cannot be removed".


class ChannelPruningError(ValueError):
  """The model, or the requested pruning, cannot be done by removing channels."""


@dataclasses.dataclass
class ChannelPruneResult:
  """What :func:`prune_channels` returns.

  Attributes:
    model: the narrow tf_keras functional model, fine-tuned and compiled.
    info: 'channels_kept' {layer: n}, 'channels_before' {layer: n} (the original
      counts when ``original_channels`` was given), 'channels_input' {layer: n}
      (counts of the model passed in), 'params_before', 'params_after',
      'macs_before', 'macs_after', 'channel_sparsity' (removed / before over the
      pruned layers), 'skipped' {layer: reason}, 'target_sparsity', 'ranking',
      'norm', and 'eval_loss' when ``eval_ds`` was given.
  """
  model: Any
  info: Dict[str, Any]


# --------------------------------------------------------------------------
# Analysis of the functional graph.
# --------------------------------------------------------------------------


class _UnionFind:
  """Union-find over channel ids; id 0 (_FIXED) stays the root of its set."""

  def __init__(self):
    self.parent = [0]

  def add(self, n: int) -> np.ndarray:
    start = len(self.parent)
    self.parent.extend(range(start, start + n))
    return np.arange(start, start + n, dtype=np.int64)

  def find(self, i: int) -> int:
    parent = self.parent
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  def union(self, a: int, b: int) -> None:
    ra, rb = self.find(int(a)), self.find(int(b))
    if ra == rb:
      return
    if ra == _FIXED:
      self.parent[rb] = _FIXED
    elif rb == _FIXED:
      self.parent[ra] = _FIXED
    else:
      self.parent[rb] = ra

  def roots(self) -> np.ndarray:
    return np.array([self.find(i) for i in range(len(self.parent))],
                    dtype=np.int64)


@dataclasses.dataclass
class _Producer:
  name: str
  ids: np.ndarray          # union-find ids of its output channels
  norm_weight: str         # the weight whose last axis indexes the filters


class ChannelGraph:
  """Which output channels of a model can be removed, and what they feed.

  Built by :func:`analyze`; read by :func:`select_channels`,
  :func:`zero_channels` and :func:`rebuild_narrow`. Everything is keyed by
  layer name, so the same graph serves any model with the same architecture
  (e.g. a rebuilt copy being fine-tuned).

  Attributes:
    model: the analysed model.
    producers: name -> _Producer, the selected layers whose channels may go.
    skipped: name -> why a selected layer cannot lose any channel.
    partial: name -> why some of a layer's channels must stay.
  """

  def __init__(self, model):
    self.model = model
    self.producers: Dict[str, _Producer] = {}
    self.skipped: Dict[str, str] = {}
    self.partial: Dict[str, str] = {}
    # Layer name -> channel ids along the last axis of its (first) input, for
    # layers whose weights or config depend on the channels coming in.
    self.input_ids: Dict[str, np.ndarray] = {}
    self.kinds: Dict[str, str] = {}
    self._uf = _UnionFind()
    self._fix_events: List[Tuple[np.ndarray, str]] = []
    self._join_events: List[Tuple[str, np.ndarray]] = []
    self.roots: Optional[np.ndarray] = None
    self.components: List[List[str]] = []

  # -- building (by analyze) --------------------------------------------------

  def fix(self, ids: Optional[np.ndarray], reason: str) -> None:
    if ids is None:
      return
    ids = np.unique(ids[ids != _FIXED])
    if ids.size == 0:
      return
    self._fix_events.append((ids, reason))
    for i in ids:
      self._uf.union(_FIXED, i)

  def record_join(self, layer_name: str, ids: List[np.ndarray]) -> None:
    self._join_events.append((layer_name, np.concatenate(ids)))

  def tie(self, a: np.ndarray, b: np.ndarray) -> None:
    for x, y in zip(a.tolist(), b.tolist()):
      if x != y:
        self._uf.union(x, y)

  def register_input(self, layer_name: str, ids: Optional[np.ndarray]) -> None:
    """Records the channels entering a layer; a second call must match the first."""
    if layer_name not in self.input_ids:
      self.input_ids[layer_name] = ids
      return
    # A shared layer has one set of weights: every call loses the same inputs.
    previous = self.input_ids[layer_name]
    if previous is None or ids is None or previous.shape != ids.shape:
      reason = (f"they feed layer '{layer_name}', which is shared with "
                "channels that cannot be pruned")
      self.fix(previous, reason)
      self.fix(ids, reason)
    else:
      self.tie(previous, ids)

  def finish(self) -> None:
    self.roots = self._uf.roots()
    # Producers tied by joins are pruned together (one component).
    owner: Dict[int, str] = {}
    parent = {name: name for name in self.producers}

    def find(n):
      while parent[n] != n:
        parent[n] = parent[parent[n]]
        n = parent[n]
      return n

    for name, p in self.producers.items():
      for r in set(self.roots[p.ids].tolist()) - {_FIXED}:
        if r in owner:
          parent[find(name)] = find(owner[r])
        else:
          owner[r] = name
    comps: Dict[str, List[str]] = {}
    for name in self.producers:
      comps.setdefault(find(name), []).append(name)
    for name, p in list(self.producers.items()):
      fixed = self.roots[p.ids] == _FIXED
      if fixed.all():
        self.skipped[name] = self._why_fixed(p)
      elif fixed.any():
        self.partial[name] = (f"{int(fixed.sum())} of its {p.ids.size} "
                              f"channels stay: {self._why_fixed(p)}")
    self.components = [sorted(n for n in c if n not in self.skipped)
                       for c in comps.values()
                       if not all(n in self.skipped for n in c)]
    for name, reason in self.skipped.items():
      logging.info("Channel pruning leaves layer '%s' unpruned: %s.", name, reason)
    for name, reason in self.partial.items():
      logging.info("Channel pruning of layer '%s': %s.", name, reason)

  def _why_fixed(self, p: _Producer) -> str:
    own = set(p.ids.tolist())
    direct = [r for ids, r in self._fix_events if own & set(ids.tolist())]
    if direct:
      return "; ".join(dict.fromkeys(direct))
    fixed_roots = {self._uf.find(int(i)) for i in p.ids}
    joins = [name for name, ids in self._join_events
             if own & set(ids.tolist())]
    others = []
    for ids, r in self._fix_events:
      if {self._uf.find(int(i)) for i in ids} & fixed_roots:
        others.append(r)
    via = f" by {', '.join(repr(j) for j in dict.fromkeys(joins))}" if joins else ""
    return (f"its channels are joined{via} with channels that must stay ("
            + "; ".join(dict.fromkeys(others)) + ")")

  # -- queries ------------------------------------------------------------------

  def prunable_layers(self) -> List[str]:
    """Selected layers that can lose at least one channel, in graph order."""
    return [n for n in self.producers if n not in self.skipped]

  def channel_counts(self) -> Dict[str, int]:
    """Current output channels of every prunable layer."""
    return {n: int(self.producers[n].ids.size) for n in self.prunable_layers()}


def _short(weight) -> str:
  return weight.name.split("/")[-1].split(":")[0]


def _width(tensor) -> Optional[int]:
  shape = tensor.shape
  if shape.rank is None or shape.rank == 0:
    return None
  return shape[-1]


def _maps_zero_to_zero(fn: Callable[[tf.Tensor], tf.Tensor]) -> bool:
  try:
    out = fn(tf.zeros([1, 3], tf.float32))
    return bool(np.all(np.asarray(out) == 0))
  except (ValueError, TypeError, tf.errors.OpError):
    return False


def _activation_name(layer) -> str:
  act = getattr(layer, "activation", None)
  return getattr(act, "__name__", str(act))


def _channels_last(layer) -> bool:
  return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _activation_problem(layer) -> Optional[str]:
  """Why a Dense/Conv layer's output channels cannot be zeroed, or None."""
  act = getattr(layer, "activation", None)
  if act is not None and not _maps_zero_to_zero(act):
    return (f"its activation {_activation_name(layer)!r} does not map 0 to 0, "
            "so a removed channel would not be zero")
  return None


def _node_list(model) -> list:
  nodes = []
  for depth in sorted(model._nodes_by_depth, reverse=True):
    nodes.extend(model._nodes_by_depth[depth])
  return nodes


def _check_functional(model) -> None:
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


def analyze(model, layer_filter: Optional[Callable[[Any], bool]] = None,
            explicit_layers: Optional[Collection[str]] = None) -> ChannelGraph:
  """Finds the output channels of ``model`` that channel pruning may remove.

  Example:

      graph = analyze(model, layer_filter=lambda l: l.name != "stem")
      graph.prunable_layers()   # ['conv2', 'dense1']
      graph.skipped             # {'conv3': "feeds Lambda layer 'lam', ..."}

  Args:
    model: a functional or Sequential tf_keras model.
    layer_filter: callable(layer) -> bool choosing the candidate layers among
      Dense / Conv1D / Conv2D / Conv3D / SeparableConv1D / SeparableConv2D;
      None: every such layer.
    explicit_layers: names the user listed by exact name. They are candidates
      even if ``layer_filter`` says no, and if one of them cannot be pruned
      (wrong type, blocked by a layer the rebuild cannot follow, produces a
      model output), this fails instead of logging and going on.

  Returns:
    The ChannelGraph.

  Raises:
    ChannelPruningError: subclassed model; an explicit layer is unknown, not a
      prunable type, or blocked; no selected layer can lose a channel.
  """
  _check_functional(model)
  explicit = set(explicit_layers or ())
  names = {layer.name for layer in model.layers}
  unknown = sorted(explicit - names)
  if unknown:
    raise ChannelPruningError(
        f"Layers {unknown} named for channel pruning are not in model "
        f"'{model.name}' (its layers: {sorted(names)}).")
  graph = ChannelGraph(model)
  uf = graph._uf
  ids_of: Dict[int, Optional[np.ndarray]] = {}  # id(KerasTensor) -> channel ids
  model_outputs = {id(t): n for t, n in zip(model.outputs, model.output_names)}

  def candidate(layer) -> bool:
    if layer.name in explicit:
      return True
    return layer_filter is None or bool(layer_filter(layer))

  for layer in model.layers:
    if layer.name in explicit and type(layer) not in _PRODUCER_TYPES:
      raise ChannelPruningError(
          f"Layer '{layer.name}' is a {type(layer).__name__}; channel pruning "
          "removes output channels of Dense, Conv1D, Conv2D, Conv3D and "
          "SeparableConv1D/2D layers only. Remove it from the layer selection.")

  for node in _node_list(model):
    layer = node.layer
    outs = tf.nest.flatten(node.outputs)
    if node.is_input:
      for t in outs:
        ids_of[id(t)] = None
      continue
    ins = list(node.keras_inputs)
    in_ids = [ids_of.get(id(t)) for t in ins]
    kind = type(layer)
    name = layer.name
    out_ids: Optional[np.ndarray] = None
    blocked: Optional[str] = None
    single = len(ins) == 1 and len(outs) == 1
    x_ids = in_ids[0] if in_ids else None
    x_width = _width(ins[0]) if ins else None

    if kind in _PRODUCER_TYPES:
      if not _channels_last(layer):
        blocked = f"data_format={layer.data_format!r}, not channels_last"
      elif getattr(layer, "groups", 1) != 1:
        blocked = f"a grouped convolution (groups={layer.groups})"
      elif not single:
        blocked = f"called on {len(ins)} tensors"
      else:
        graph.kinds[name] = "producer"
        graph.register_input(name, x_ids)
        if candidate(layer):
          problem = _activation_problem(layer)
          if id(outs[0]) in model_outputs:
            graph.skipped[name] = (
                f"it produces the model output '{model_outputs[id(outs[0])]}'")
          elif problem:
            graph.skipped[name] = problem
          else:
            if name not in graph.producers:
              width = layer.units if kind in _DENSE else layer.filters
              graph.producers[name] = _Producer(
                  name, uf.add(width),
                  "pointwise_kernel" if kind in _SEPARABLE else "kernel")
            out_ids = graph.producers[name].ids
      if blocked and candidate(layer):
        graph.skipped[name] = f"it is {blocked}"
    elif kind in _DEPTHWISE:
      if not single or not _channels_last(layer):
        blocked = "DepthwiseConv with channels_first data or several inputs"
      else:
        graph.kinds[name] = "depthwise"
        graph.register_input(name, x_ids)
        if x_ids is not None:
          out_ids = np.repeat(x_ids, layer.depth_multiplier)
    elif kind is _L.BatchNormalization:
      rank = ins[0].shape.rank if ins else None
      axes = list(np.atleast_1d(layer.axis))
      if not single or rank is None or axes not in ([-1], [rank - 1]):
        blocked = f"normalizes over axis {layer.axis}, not the channel axis"
      else:
        graph.kinds[name] = "batchnorm"
        graph.register_input(name, x_ids)
        out_ids = x_ids
    elif kind is _L.PReLU:
      if not single:
        blocked = f"called on {len(ins)} tensors"
      else:
        graph.kinds[name] = "prelu"
        graph.register_input(name, x_ids)
        out_ids = x_ids
    elif kind is _L.Reshape:
      target = tuple(layer.target_shape)
      if not single:
        blocked = f"called on {len(ins)} tensors"
      elif x_ids is not None and (target[-1] != x_width
                                  or _width(outs[0]) != x_width):
        blocked = ("it reshapes the channel axis (a Reshape that hard-codes "
                   "the channel count)")
      else:
        graph.kinds[name] = "reshape"
        graph.register_input(name, x_ids)
        out_ids = x_ids
    elif all(i is None for i in in_ids):
      out_ids = None  # Nothing prunable flows through here.
    elif kind in _PASSTHROUGH or kind in _ELEMENTWISE:
      if not single or not _channels_last(layer):
        blocked = "several inputs or channels_first data"
      elif kind in _ELEMENTWISE and not _elementwise_ok(layer):
        blocked = "it does not map 0 to 0 channel by channel"
      elif x_width is not None and _width(outs[0]) != x_width:
        blocked = "it changes the channel axis"
      else:
        out_ids = x_ids
    elif kind is _L.Flatten:
      shape = ins[0].shape if single else None
      if not single or not _channels_last(layer):
        blocked = "several inputs or channels_first data"
      elif x_ids is not None:
        spatial = shape[1:-1]
        if any(d is None for d in spatial):
          blocked = f"its input shape {shape} is not fully known"
        else:
          out_ids = np.tile(x_ids, int(np.prod(spatial, dtype=np.int64)))
    elif kind is _L.Concatenate:
      rank = outs[0].shape.rank
      if len(outs) != 1 or rank is None or layer.axis not in (-1, rank - 1):
        if any(i is not None for i in in_ids):
          blocked = f"it concatenates along axis {layer.axis}, not channels"
      elif any(i is not None for i in in_ids):
        parts = []
        for t, ids in zip(ins, in_ids):
          if ids is None:
            w = _width(t)
            if w is None:
              blocked = f"input {t.name} has an unknown channel count"
              break
            ids = np.zeros(w, np.int64)
          parts.append(ids)
        if blocked is None:
          out_ids = np.concatenate(parts)
    elif kind in _JOIN:
      widths = {_width(t) for t in ins}
      if len(outs) != 1 or len(widths) != 1 or None in widths:
        if any(i is not None for i in in_ids):
          blocked = ("it joins tensors of different or unknown channel counts "
                     f"{sorted(map(str, widths))}")
      elif any(i is not None for i in in_ids):
        first = next(i for i in in_ids if i is not None)
        for ids in in_ids:
          if ids is None:
            graph.fix(first, f"'{name}' ({kind.__name__}) joins them with a "
                       "tensor no pruned layer produces (e.g. a model input)")
          elif ids is not first:
            graph.tie(first, ids)
        graph.record_join(name, [i for i in in_ids if i is not None])
        out_ids = first
    else:
      blocked = _blocker_reason(layer)

    if blocked is not None:
      for ids in in_ids:
        graph.fix(ids, f"they feed {kind.__name__} layer '{name}', which the "
                   f"rebuild cannot follow ({blocked})")
      out_ids = None
    if len(outs) == 1:
      ids_of[id(outs[0])] = out_ids
    else:
      for t in outs:
        ids_of[id(t)] = None

  for t, out_name in zip(model.outputs, model.output_names):
    ids = ids_of.get(id(t))
    graph.fix(ids, f"their channels reach the model output '{out_name}'")
  graph.finish()

  blocked_explicit = {n: r for n, r in graph.skipped.items() if n in explicit}
  if blocked_explicit:
    name, reason = next(iter(blocked_explicit.items()))
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
  return graph


def _elementwise_ok(layer) -> bool:
  if isinstance(layer, _L.Rescaling):
    if np.ndim(layer.scale) or np.ndim(layer.offset):
      return False
  return _maps_zero_to_zero(layer)


def _blocker_reason(layer) -> str:
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


# --------------------------------------------------------------------------
# Choosing channels.
# --------------------------------------------------------------------------


def _layer_weights(model, name: str) -> Dict[str, np.ndarray]:
  return {_short(w): w.numpy() for w in model.get_layer(name).weights}


def channel_norms(model, graph: ChannelGraph,
                  norm: str = "l1") -> Dict[str, np.ndarray]:
  """L1 or L2 norm of each output filter/neuron of every prunable layer.

  For SeparableConv layers the filter is the pointwise kernel's column.
  """
  if norm not in NORMS:
    raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
  out = {}
  for name in graph.prunable_layers():
    w = _layer_weights(model, name)[graph.producers[name].norm_weight]
    w = w.reshape(-1, w.shape[-1])
    out[name] = (np.abs(w).sum(0) if norm == "l1"
                 else np.sqrt((w.astype(np.float64) ** 2).sum(0)))
  return out


@dataclasses.dataclass
class _Classes:
  """Removable channel classes (channels joined so they go together)."""
  roots: np.ndarray                    # class root per class
  members: List[List[Tuple[str, int]]]  # (layer, channel) per class
  comp: np.ndarray                      # component index per class


def _classes(graph: ChannelGraph) -> _Classes:
  by_root: Dict[int, List[Tuple[str, int]]] = {}
  comp_of: Dict[int, int] = {}
  for g, names in enumerate(graph.components):
    for name in names:
      ids = graph.producers[name].ids
      for c, r in enumerate(graph.roots[ids].tolist()):
        if r == _FIXED:
          continue
        by_root.setdefault(r, []).append((name, c))
        comp_of[r] = g
  roots = np.array(sorted(by_root), dtype=np.int64)
  return _Classes(roots, [by_root[r] for r in roots.tolist()],
                  np.array([comp_of[r] for r in roots.tolist()], np.int64))


def _component_width(graph: ChannelGraph, g: int,
                     counts: Optional[Mapping[str, int]] = None) -> int:
  names = graph.components[g]
  if counts is None:
    return max(int(graph.producers[n].ids.size) for n in names)
  return max(int(counts.get(n, graph.producers[n].ids.size)) for n in names)


def _keep_count(width: int, sparsity: float) -> int:
  return int(math.floor((1.0 - sparsity) * width + 0.5))


def removal_targets(graph: ChannelGraph, target_sparsity: float,
                    ranking: str = "per_layer",
                    original_channels: Optional[Mapping[str, int]] = None
                    ) -> Dict[Any, int]:
  """How many channel classes to remove: per component, or in total ('global').

  Per layer, a layer of C channels (C counted as in ``original_channels`` when
  given) keeps round((1 - target_sparsity) * C) channels; joined layers count
  as one. Globally, the selected layers together keep that fraction.

  Raises:
    ChannelPruningError: the target leaves a layer (per_layer) or the layers
      (global) with zero channels.
  """
  _check_choice("ranking", ranking, RANKINGS)
  _check_sparsity(target_sparsity)
  targets: Dict[Any, int] = {}
  total_orig = total_now = 0
  empty = []
  for g, names in enumerate(graph.components):
    now = _component_width(graph, g)
    orig = _component_width(graph, g, original_channels or {})
    total_orig += orig
    total_now += now
    keep = _keep_count(orig, target_sparsity)
    if ranking == "per_layer":
      if keep < 1:
        empty.append((" and ".join(f"'{n}'" for n in names), orig))
      targets[g] = max(0, now - keep)
  if empty:
    layers = ", ".join(f"{n} ({c} channels)" for n, c in empty)
    raise ChannelPruningError(
        f"target_sparsity={target_sparsity} would leave layer "
        f"{layers} with 0 channels; channel pruning never goes below one "
        f"channel. Use target_sparsity <= "
        f"{_max_sparsity(min(c for _, c in empty))}, exclude "
        f"{' and '.join(n for n, _ in empty)} from the layer selection, or "
        "use ranking='global'.")
  if ranking == "global":
    keep = _keep_count(total_orig, target_sparsity)
    if keep < len(graph.components):
      raise ChannelPruningError(
          f"target_sparsity={target_sparsity} would keep {keep} of the "
          f"{total_orig} channels of the {len(graph.components)} pruned layers "
          "(or joined groups), leaving some with 0 channels; channel pruning "
          "never goes below one channel per layer. Use target_sparsity <= "
          f"{1 - (len(graph.components) - 0.5) / total_orig:.4f}.")
    targets["global"] = max(0, total_now - keep)
  return targets


def _max_sparsity(width: int) -> float:
  """Largest sparsity keeping one of ``width`` channels, rounded down."""
  return math.floor((1.0 - 0.5 / width) * 1e4) / 1e4


def _choose(graph: ChannelGraph, classes: _Classes,
            norms: Mapping[str, np.ndarray], targets: Mapping[Any, int],
            dropped: np.ndarray) -> np.ndarray:
  """Marks the weakest classes dropped until ``targets`` are met.

  ``dropped`` and the result are flags per union-find id, meaningful at class
  roots. Classes already dropped stay dropped; a layer keeps one channel.
  """
  dropped = dropped.copy()
  per_id = dropped[graph.roots]
  scaled = {}
  for name, n in norms.items():
    mean = float(np.mean(n)) if n.size else 0.0
    # Torch-Pruning's 'mean' normalizer: makes layers comparable (global).
    scaled[name] = n / mean if mean > 0 else np.zeros_like(n)
  score = np.array([np.mean([scaled[p][c] for p, c in m])
                    for m in classes.members])
  kept = {n: int(graph.producers[n].ids.size - per_id[graph.producers[n].ids].sum())
          for names in graph.components for n in names}
  is_dropped = dropped[classes.roots]

  def pick(candidates: np.ndarray, n: int) -> None:
    for k in candidates[np.argsort(score[candidates], kind="stable")]:
      if n <= 0:
        return
      if is_dropped[k]:
        continue
      loss: Dict[str, int] = {}
      for p, _ in classes.members[k]:
        loss[p] = loss.get(p, 0) + 1
      if any(kept[p] - d < 1 for p, d in loss.items()):
        continue
      for p, d in loss.items():
        kept[p] -= d
      is_dropped[k] = True
      n -= 1

  if "global" in targets:
    n = targets["global"] - int(is_dropped.sum())
    pick(np.arange(len(classes.roots)), n)
  else:
    for g, target in targets.items():
      members = np.where(classes.comp == g)[0]
      pick(members, target - int(is_dropped[members].sum()))
  dropped[classes.roots[is_dropped]] = True
  return dropped


def _expand(graph: ChannelGraph, dropped_roots: np.ndarray) -> np.ndarray:
  """Root-level dropped flags -> flags for every id."""
  return dropped_roots[graph.roots]


def select_channels(model, graph: ChannelGraph, target_sparsity: float,
                    ranking: str = "per_layer", norm: str = "l1",
                    original_channels: Optional[Mapping[str, int]] = None
                    ) -> Dict[str, np.ndarray]:
  """One-shot choice of the channels to keep, by filter magnitude.

  Example:

      graph = analyze(model)
      kept = select_channels(model, graph, 0.5)   # {'conv1': array([0, 3, ...])}
      narrow = rebuild_narrow(graph, kept)

  Returns:
    Layer name -> sorted indices of the output channels to keep.
  """
  targets = removal_targets(graph, target_sparsity, ranking, original_channels)
  classes = _classes(graph)
  dropped = _choose(graph, classes, channel_norms(model, graph, norm), targets,
                    np.zeros(len(graph.roots), bool))
  return _kept_from_dropped(graph, _expand(graph, dropped))


def _kept_from_dropped(graph: ChannelGraph,
                       dropped_ids: np.ndarray) -> Dict[str, np.ndarray]:
  return {n: np.where(~dropped_ids[graph.producers[n].ids])[0]
          for n in graph.prunable_layers()}


def _dropped_from_kept(graph: ChannelGraph,
                       kept: Mapping[str, Sequence[int]]) -> np.ndarray:
  """Kept indices per layer -> dropped flag per id; checks joins agree."""
  dropped = np.zeros(len(graph.roots), bool)
  for name, keep in kept.items():
    if name not in graph.producers or name in graph.skipped:
      raise ChannelPruningError(
          f"Layer '{name}' cannot lose channels "
          f"({graph.skipped.get(name, 'not a selected prunable layer')}).")
    ids = graph.producers[name].ids
    keep = np.asarray(keep, np.int64)
    if keep.size < 1:
      raise ChannelPruningError(f"Layer '{name}' must keep at least one channel.")
    if keep.min() < 0 or keep.max() >= ids.size:
      raise ChannelPruningError(
          f"Kept channels of '{name}' must be in [0, {ids.size}); got {keep}.")
    mask = np.ones(ids.size, bool)
    mask[keep] = False
    dropped[ids[mask]] = True
  roots = graph.roots
  for r in np.unique(roots[dropped]):
    members = roots == r
    if r == _FIXED or not dropped[members].all():
      raise ChannelPruningError(
          "The channels to keep disagree across joined layers (Add, Multiply, "
          "...) or drop channels that must stay; choose them with "
          "select_channels.")
  return dropped


# --------------------------------------------------------------------------
# Masks (the wide model with channels zeroed) and the narrow rebuild.
# --------------------------------------------------------------------------


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
      elif kind == "depthwise" and s == "depthwise_kernel":
        masks[(name, s)] = keep.reshape((1,) * (len(w.shape) - 2) + (-1, 1))
      elif kind == "depthwise" and s == "bias":
        masks[(name, s)] = np.repeat(keep, layer.depth_multiplier)
  return masks


def zero_channels(model, graph: ChannelGraph,
                  kept: Mapping[str, Sequence[int]]) -> None:
  """Zeroes, in place, the channels not in ``kept`` (the 'zeroed wide' model).

  The narrow model from :func:`rebuild_narrow` computes the same outputs.
  """
  dropped = _dropped_from_kept(graph, kept)
  for (name, s), mask in weight_masks(graph, dropped).items():
    for w in model.get_layer(name).weights:
      if _short(w) == s:
        w.assign(w.numpy() * mask)


def _slice_weights(kind: str, layer, weights: Dict[str, np.ndarray],
                   in_idx: Optional[np.ndarray], out_idx: Optional[np.ndarray]
                   ) -> Dict[str, np.ndarray]:
  """The kept slices of one layer's weights."""
  w = dict(weights)
  if kind == "producer":
    if isinstance(layer, _SEPARABLE):
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
    w["depthwise_kernel"] = w["depthwise_kernel"][..., in_idx, :]
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
  _check_functional(model)
  dropped = _dropped_from_kept(graph, kept)
  new_layers: Dict[str, Any] = {}
  tensors: Dict[int, Any] = {}
  for layer in model._input_layers:
    new = _L.InputLayer(**layer.get_config())
    tensors[id(tf.nest.flatten(layer._inbound_nodes[0].outputs)[0])] = (
        tf.nest.flatten(new._inbound_nodes[0].outputs)[0])
  is_keras_tensor = keras.backend.is_keras_tensor
  for node in _node_list(model):
    if node.is_input:
      continue
    layer = node.layer
    if layer.name not in new_layers:
      new_layers[layer.name] = _narrow_layer(graph, layer, dropped)
    args, kwargs = tf.nest.map_structure(
        lambda t: tensors[id(t)] if is_keras_tensor(t) else t,
        (node.call_args, node.call_kwargs))
    outputs = new_layers[layer.name](*args, **kwargs)
    for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
      tensors[id(old)] = new
  inputs = tf.nest.map_structure(lambda t: tensors[id(t)], model._nested_inputs)
  outputs = tf.nest.map_structure(lambda t: tensors[id(t)], model._nested_outputs)
  narrow = keras.Model(inputs, outputs, name=model.name)
  for name, new in new_layers.items():
    old = model.get_layer(name)
    kind = graph.kinds.get(name)
    if kind is None or not old.weights:
      new.set_weights(old.get_weights())
      continue
    in_idx = _keep_index(graph.input_ids.get(name), dropped)
    out_idx = None
    if name in graph.producers and name not in graph.skipped:
      out_idx = np.where(~dropped[graph.producers[name].ids])[0]
    sliced = _slice_weights(kind, old, _layer_weights(model, name), in_idx,
                            out_idx)
    new.set_weights([sliced[_short(w)] for w in new.weights])
  return narrow


def _narrow_layer(graph: ChannelGraph, layer, dropped: np.ndarray):
  config = layer.get_config()
  name = layer.name
  if name in graph.producers and name not in graph.skipped:
    n = int((~dropped[graph.producers[name].ids]).sum())
    config["units" if isinstance(layer, _DENSE) else "filters"] = n
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


def count_macs(model) -> int:
  """Multiply-adds of one example through Dense and convolution layers.

  Kernel size times output positions (input positions for transposed
  convolutions); unknown spatial sizes count as 1; nested models are counted.
  """
  total = 0
  for node in _node_list(model):
    layer = node.layer
    if node.is_input:
      continue
    if isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False):
      total += count_macs(layer)
      continue
    transposed = isinstance(layer, _TRANSPOSED)
    if not isinstance(layer, _PRODUCER_TYPES + _DEPTHWISE + _TRANSPOSED):
      continue
    ref = node.keras_inputs[0] if transposed else tf.nest.flatten(node.outputs)[0]
    positions = 1
    for d in ref.shape[1:-1]:
      positions *= d or 1
    for w in layer.weights:
      if _short(w) in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        total += int(np.prod(w.shape)) * positions
  return int(total)


# --------------------------------------------------------------------------
# Gradual pruning and the end-to-end function.
# --------------------------------------------------------------------------


def _check_choice(parameter: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"`{parameter}` must be one of {allowed}, got {value!r}.")


def _check_sparsity(value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"`target_sparsity` must be a float in [0, 1), got "
                    f"{type(value).__name__} {value!r}.")
  if not 0.0 <= float(value) < 1.0:
    raise ValueError(f"`target_sparsity` must be in [0, 1) (the fraction of "
                     f"channels removed), got {value}.")


def _check_steps(**steps) -> None:
  for name, value in steps.items():
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f"`{name}` must be an int, got {type(value).__name__} "
                      f"{value!r}.")
    if value < (1 if name == "frequency" else 0):
      raise ValueError(f"`{name}` must be >= {1 if name == 'frequency' else 0}, "
                       f"got {value}.")


def schedule_steps(train_steps: int, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   frequency: Optional[int] = None) -> Dict[int, float]:
  """Training step -> fraction of the final removal reached at that step.

  Polynomial ramp (power 3, as tfmot's PolynomialDecay) from ``begin_step`` to
  ``end_step`` (default: ``train_steps``), updated every ``frequency`` steps
  (default: a tenth of the ramp) and at ``end_step``. Steps at or after
  ``train_steps`` are not listed: the final removal happens after training.
  """
  end = train_steps if end_step is None else end_step
  if end < begin_step:
    raise ValueError(f"`end_step` ({end}) must be >= `begin_step` "
                     f"({begin_step}).")
  span = end - begin_step
  freq = frequency or max(1, span // 10)
  steps = list(range(begin_step, end + 1, freq)) + [end]
  out = {}
  for t in steps:
    if t >= train_steps:
      continue
    frac = 1.0 if span == 0 else min(1.0, (t - begin_step) / span)
    out[t] = 1.0 - (1.0 - frac) ** 3
  return dict(sorted(out.items()))


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

  def _bind(self):
    pairs = []
    # Every weight a pruned channel can touch, with ones until it is dropped.
    ones = weight_masks(self._graph, np.zeros(len(self._graph.roots), bool))
    for key, init in ones.items():
      name, s = key
      var = next(w for w in self.model.get_layer(name).weights if _short(w) == s)
      pairs.append((key, var, tf.Variable(init, trainable=False, dtype=var.dtype)))
    self._pairs = pairs
    self._apply = tf.function(self._apply_masks)

  def _apply_masks(self):
    for _, var, mask in self._pairs:
      var.assign(var * mask)

  def update(self, fraction: float):
    if self._pairs is None:
      self._bind()
    targets = {k: int(math.floor(fraction * v + 0.5))
               for k, v in self._targets.items()}
    norms = channel_norms(self.model, self._graph, self._norm)
    self.dropped = _choose(self._graph, self._classes, norms, targets,
                           self.dropped)
    masks = weight_masks(self._graph, _expand(self._graph, self.dropped))
    for key, _, mask in self._pairs:
      mask.assign(masks[key].astype(mask.dtype.as_numpy_dtype))
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
    # Cosine to zero: the narrow model ends at a settled point, not wherever
    # the last few steps at full rate left it. On the demo at 75% of the
    # channels, four seeds lost 0.16/0/0.32/0 accuracy points this way, and
    # 0.16/2.2/0/- at a constant rate.
    learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate,
                                                           steps)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
  if steps <= 0:
    return
  # Slots made now, not inside the first traced step (which then traces twice).
  model.optimizer.build(model.trainable_variables)
  if ds is None:
    raise ValueError(f"`train_ds` is None, but `{parameter}`={steps} steps of "
                     "training need it.")
  model.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0,
            callbacks=callbacks)


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
  """Removes whole filters and neurons, then fine-tunes the narrow model.

  ``model`` is never modified. During ``train_steps`` a copy is fine-tuned
  while the weakest channels (filter L1/L2 norm) are masked to zero, more of
  them every ``frequency`` steps until the target; then the narrow model is
  rebuilt without them and fine-tuned for ``finetune_steps``.

  Step-wise search: pass a model this function already narrowed, a higher
  ``target_sparsity`` and ``original_channels=info['channels_before']`` of the
  first call; the target is then relative to the original channel counts and
  only the extra channels are removed, so each step costs only its own
  training steps.

  Example:

      r1 = prune_channels(model, ds, target_sparsity=0.5, train_steps=200,
                          finetune_steps=100, loss=loss)
      r2 = prune_channels(r1.model, ds, target_sparsity=0.7, train_steps=200,
                          finetune_steps=100, loss=loss,
                          original_channels=r1.info["channels_before"])

  Args:
    model: a functional or Sequential tf_keras model.
    train_ds: batched (features, label) dataset (repeated as needed).
    target_sparsity: fraction of output channels to remove, in [0, 1).
    ranking: 'per_layer' (each layer loses the fraction) or 'global' (ranked
      together after dividing each layer's norms by their mean).
    norm: 'l1' or 'l2' of the whole filter/neuron.
    layer_filter: callable(layer) -> bool selecting candidate layers; None =
      every Dense/Conv/SeparableConv layer that does not produce an output.
    explicit_layers: names the user listed exactly; blocked ones fail (see
      :func:`analyze`).
    train_steps: gradual pruning steps (0: one-shot removal).
    finetune_steps: steps after the rebuild.
    begin_step, end_step, frequency: the gradual schedule
      (see :func:`schedule_steps`).
    learning_rate: Adam learning rate for both phases.
    loss: Keras loss (object or name).
    seed: random seed (tf_keras.utils.set_random_seed), None to leave it.
    eval_ds: optional batched dataset; its loss on the result goes to
      ``info['eval_loss']``.
    original_channels: layer -> channel count the targets are relative to.

  Returns:
    ChannelPruneResult(model, info).

  Raises:
    ChannelPruningError: see :func:`analyze` and :func:`removal_targets`.
    ValueError, TypeError: bad arguments, naming the parameter.
  """
  _check_sparsity(target_sparsity)
  _check_choice("ranking", ranking, RANKINGS)
  _check_choice("norm", norm, NORMS)
  _check_steps(train_steps=train_steps, finetune_steps=finetune_steps,
               begin_step=begin_step, end_step=end_step, frequency=frequency)
  schedule = schedule_steps(train_steps, begin_step, end_step, frequency)
  graph = analyze(model, layer_filter, explicit_layers)
  targets = removal_targets(graph, target_sparsity, ranking, original_channels)
  classes = _classes(graph)
  logging.info("Channel pruning %s to sparsity %s (%s, %s): %s.",
               graph.prunable_layers(), target_sparsity, ranking, norm,
               graph.channel_counts())
  if seed is not None:
    keras.utils.set_random_seed(seed)

  work = rebuild_narrow(graph, {})
  callback = _GradualChannelPruning(graph, classes, targets, schedule, norm)
  if train_steps > 0:
    _fit(work, train_ds, train_steps, learning_rate, loss, "train_steps",
         callbacks=[callback])
  final = _choose(graph, classes, channel_norms(work, graph, norm), targets,
                  callback.dropped)
  kept = _kept_from_dropped(graph, _expand(graph, final))
  narrow = rebuild_narrow(graph, kept, model=work)
  _fit(narrow, train_ds, finetune_steps, learning_rate, loss, "finetune_steps",
       decay=True)

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


def export_narrow_model(narrow_model, original_model, path: str,
                        sample_serialized_examples: Optional[Sequence[bytes]] = None,
                        raw_feature_spec: Optional[Mapping[str, Any]] = None,
                        label_key: Optional[str] = None) -> Dict[str, Any]:
  """Saves the narrow model as a Keras SavedModel with the original's signatures.

  The original's serving functions read the wide model's variables, so each is
  re-created for the narrow model (serialized tf.Examples -> parse -> optional
  ``tft_layer`` -> model -> the same output names), after checking that the
  re-created function, run on the wide original, reproduces the original's
  outputs. Signatures that read none of the model's weights (TFX's
  ``transform_features``) are kept as they are. The result loads with plain
  ``tf.saved_model.load``.

  Example:

      export_narrow_model(result.model, trainer_model,
                          os.path.join(staging, "Format-Serving"),
                          sample_serialized_examples=examples[:32])

  Args:
    narrow_model: from :func:`prune_channels`. Its ``tft_layer`` attribute is
      set to the original's when there is one.
    original_model: the tf_keras model loaded from the Trainer's SavedModel.
    path: where to write the SavedModel.
    sample_serialized_examples: serialized raw tf.Examples to check the
      signatures on (synthesized from the feature spec when None).
    raw_feature_spec: raw features the serving signature parses (label
      excluded); None: read from the original signature's ParseExampleV2 op.
    label_key: dropped from ``raw_feature_spec`` and from transformed features.

  Returns:
    {'signatures': [names], 'regenerated': [names], 'kept': [names]}.

  Raises:
    signatures_lib.SignatureExportError: a signature cannot be re-created
      exactly; the message names it and says what to do.
  """
  return signatures_lib.save_with_signatures(
      narrow_model, original_model, path,
      sample_serialized_examples=sample_serialized_examples,
      raw_feature_spec=raw_feature_spec, label_key=label_key,
      alternative="sparsity_structure='unstructured' (it keeps the original "
      "signatures)")
