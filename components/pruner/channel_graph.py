"""Which output channels of a tf_keras functional model can be removed.

:func:`analyze` walks the functional graph once and follows every output channel of
the Dense / Conv1D / Conv2D / Conv3D / SeparableConv1D / SeparableConv2D layers
through the layers that consume it. What each layer type does to the channels
flowing in is one rule in a table (``_RULES`` for layers that always matter,
``_FLOWING_RULES`` for layers that only matter when prunable channels reach them):
BatchNormalization, DepthwiseConv, pooling, activations, Dropout, Flatten -> Dense
re-indexing, a Reshape that keeps the channel axis, Concatenate offsets, and the
joins (Add / Subtract / Multiply / Average / Maximum / Minimum) that tie channels
so joined tensors lose the same ones. A channel that reaches a model output or a
layer the rebuild cannot follow (Lambda, TF-op layers, custom layers, a Reshape or
Permute that moves the channel axis, LayerNormalization, ...) is kept.

Example:

    graph = analyze(model, layer_filter=lambda l: l.name != "stem")
    graph.prunable_layers()   # ['conv2', 'dense1']
    graph.skipped             # {'conv3': "feeds Lambda layer 'lam', ..."}
"""

import dataclasses
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

# tf_keras has no public API for the functional graph: it is read through
# Model._nodes_by_depth, _input_layers, _nested_inputs/_nested_outputs.
# pylint: disable=protected-access

_L = keras.layers
# Exact types: Conv1DTranspose subclasses Conv1D, DepthwiseConv2D subclasses Conv,
# and a user's subclass of Dense may do anything in call().
DENSE = (_L.Dense,)
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
PRODUCER_TYPES = DENSE + _CONV + SEPARABLE
DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
TRANSPOSED = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
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
FIXED = 0  # Union-find id of "cannot be removed".


class ChannelPruningError(ValueError):
  """The model, or the requested pruning, cannot be done by removing channels."""




# --------------------------------------------------------------------------
# Analysis of the functional graph.
# --------------------------------------------------------------------------


class _UnionFind:
  """Union-find over channel ids; id 0 (FIXED) stays the root of its set."""

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
    if ra == FIXED:
      self.parent[rb] = FIXED
    elif rb == FIXED:
      self.parent[ra] = FIXED
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
    ids = np.unique(ids[ids != FIXED])
    if ids.size == 0:
      return
    self._fix_events.append((ids, reason))
    for i in ids:
      self._uf.union(FIXED, i)

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
      for r in set(self.roots[p.ids].tolist()) - {FIXED}:
        if r in owner:
          parent[find(name)] = find(owner[r])
        else:
          owner[r] = name
    comps: Dict[str, List[str]] = {}
    for name in self.producers:
      comps.setdefault(find(name), []).append(name)
    for name, p in list(self.producers.items()):
      fixed = self.roots[p.ids] == FIXED
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


def short_name(weight) -> str:
  return weight.name.split("/")[-1].split(":")[0]


def layer_weights(model, name: str) -> Dict[str, np.ndarray]:
  """Short weight name ('kernel', 'bias', ...) -> value, of one layer."""
  return {short_name(w): w.numpy() for w in model.get_layer(name).weights}


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


def node_list(model) -> list:
  nodes = []
  for depth in sorted(model._nodes_by_depth, reverse=True):
    nodes.extend(model._nodes_by_depth[depth])
  return nodes


def check_functional(model) -> None:
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


@dataclasses.dataclass
class _Call:
  """One call of a layer in the graph, as the per-type rules see it."""
  graph: ChannelGraph
  layer: Any
  ins: list
  outs: list
  in_ids: List[Optional[np.ndarray]]  # channel ids of each input (None: none)
  candidate: bool                     # the layer is selected for pruning
  output_name: Optional[str]          # the model output its first output is

  @property
  def name(self) -> str:
    return self.layer.name

  @property
  def single(self) -> bool:
    return len(self.ins) == 1 and len(self.outs) == 1

  @property
  def x_ids(self) -> Optional[np.ndarray]:
    return self.in_ids[0] if self.in_ids else None

  @property
  def x_width(self) -> Optional[int]:
    return _width(self.ins[0]) if self.ins else None

  def register(self, kind: str) -> None:
    """Records a layer whose weights or config follow the channels coming in."""
    self.graph.kinds[self.name] = kind
    self.graph.register_input(self.name, self.x_ids)


# A rule: _Call -> (channel ids of the output or None, why the rebuild cannot
# follow the channels through this layer or None).
_Rule = Callable[[_Call], Tuple[Optional[np.ndarray], Optional[str]]]


def _producer(call: _Call):
  layer, graph, name = call.layer, call.graph, call.name
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
      problem = _activation_problem(layer)
      if call.output_name is not None:
        graph.skipped[name] = f"it produces the model output '{call.output_name}'"
      elif problem:
        graph.skipped[name] = problem
      else:
        if name not in graph.producers:
          width = layer.units if type(layer) in DENSE else layer.filters
          graph.producers[name] = _Producer(
              name, graph._uf.add(width),
              "pointwise_kernel" if type(layer) in SEPARABLE else "kernel")
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
  rank = call.ins[0].shape.rank if call.ins else None
  axes = list(np.atleast_1d(call.layer.axis))
  if not call.single or rank is None or axes not in ([-1], [rank - 1]):
    return None, f"normalizes over axis {call.layer.axis}, not the channel axis"
  call.register("batchnorm")
  return call.x_ids, None


def _prelu(call: _Call):
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  call.register("prelu")
  return call.x_ids, None


def _reshape(call: _Call):
  target = tuple(call.layer.target_shape)
  if not call.single:
    return None, f"called on {len(call.ins)} tensors"
  if call.x_ids is not None and (target[-1] != call.x_width
                                 or _width(call.outs[0]) != call.x_width):
    return None, ("it reshapes the channel axis (a Reshape that hard-codes the "
                  "channel count)")
  call.register("reshape")
  return call.x_ids, None


def _channelwise(call: _Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if type(call.layer) in _ELEMENTWISE and not _elementwise_ok(call.layer):
    return None, "it does not map 0 to 0 channel by channel"
  if call.x_width is not None and _width(call.outs[0]) != call.x_width:
    return None, "it changes the channel axis"
  return call.x_ids, None


def _flatten(call: _Call):
  if not call.single or not _channels_last(call.layer):
    return None, "several inputs or channels_first data"
  if call.x_ids is None:
    return None, None
  shape = call.ins[0].shape
  spatial = shape[1:-1]
  if any(d is None for d in spatial):
    return None, f"its input shape {shape} is not fully known"
  return np.tile(call.x_ids, int(np.prod(spatial, dtype=np.int64))), None


def _concatenate(call: _Call):
  rank = call.outs[0].shape.rank
  if len(call.outs) != 1 or rank is None or call.layer.axis not in (-1, rank - 1):
    return None, f"it concatenates along axis {call.layer.axis}, not channels"
  parts = []
  for t, ids in zip(call.ins, call.in_ids):
    if ids is None:
      w = _width(t)
      if w is None:
        return None, f"input {t.name} has an unknown channel count"
      ids = np.zeros(w, np.int64)  # Channels no pruned layer makes: fixed.
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
      call.graph.fix(first, f"'{call.name}' ({type(call.layer).__name__}) joins "
                     "them with a tensor no pruned layer produces (e.g. a "
                     "model input)")
    elif ids is not first:
      call.graph.tie(first, ids)
  call.graph.record_join(call.name,
                         [i for i in call.in_ids if i is not None])
  return first, None


def _unsupported(call: _Call):
  return None, _blocker_reason(call.layer)


def _table(*rules: Tuple[Tuple[type, ...], _Rule]) -> Dict[type, _Rule]:
  return {kind: rule for kinds, rule in rules for kind in kinds}


# Exact layer type -> rule. These layers matter whether or not prunable
# channels reach them (their own inputs are registered for the rebuild).
_RULES = _table((PRODUCER_TYPES, _producer), (DEPTHWISE, _depthwise),
                ((_L.BatchNormalization,), _batchnorm), ((_L.PReLU,), _prelu),
                ((_L.Reshape,), _reshape))
# Rules for layers that prunable channels reach; any other type blocks them.
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


def _follow(graph: ChannelGraph, node, ids_of: Dict[int, Optional[np.ndarray]],
            candidate: Callable[[Any], bool],
            model_outputs: Dict[int, str]) -> None:
  """Applies the rule of one node's layer; records its output's channel ids."""
  layer = node.layer
  outs = tf.nest.flatten(node.outputs)
  ins = list(node.keras_inputs)
  in_ids = [ids_of.get(id(t)) for t in ins]
  rule = _RULES.get(type(layer))
  if rule is None and all(i is None for i in in_ids):
    out_ids, blocked = None, None  # Nothing prunable flows through here.
  else:
    rule = rule or _FLOWING_RULES.get(type(layer), _unsupported)
    call = _Call(graph, layer, ins, outs, in_ids, candidate(layer),
                 model_outputs.get(id(outs[0])) if outs else None)
    out_ids, blocked = rule(call)
  if blocked is not None:
    for ids in in_ids:
      graph.fix(ids, f"they feed {type(layer).__name__} layer '{layer.name}', "
                f"which the rebuild cannot follow ({blocked})")
    out_ids = None
  if len(outs) == 1:
    ids_of[id(outs[0])] = out_ids
  else:
    for t in outs:
      ids_of[id(t)] = None


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
  check_functional(model)
  explicit = set(explicit_layers or ())
  _check_explicit(model, explicit)
  graph = ChannelGraph(model)
  ids_of: Dict[int, Optional[np.ndarray]] = {}  # id(KerasTensor) -> channel ids
  model_outputs = {id(t): n for t, n in zip(model.outputs, model.output_names)}

  def candidate(layer) -> bool:
    if layer.name in explicit:
      return True
    return layer_filter is None or bool(layer_filter(layer))

  for node in node_list(model):
    if node.is_input:
      for t in tf.nest.flatten(node.outputs):
        ids_of[id(t)] = None
    else:
      _follow(graph, node, ids_of, candidate, model_outputs)
  for t, out_name in zip(model.outputs, model.output_names):
    graph.fix(ids_of.get(id(t)),
              f"their channels reach the model output '{out_name}'")
  graph.finish()
  _check_result(graph, model, explicit)
  return graph


def _check_result(graph: ChannelGraph, model, explicit: Collection[str]) -> None:
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


