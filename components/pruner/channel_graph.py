"""Which output channels of a functional model can be removed (tf_keras or Keras 3).

:func:`analyze` walks the functional graph once and follows every output channel of
the Dense / Conv1D / Conv2D / Conv3D / SeparableConv1D / SeparableConv2D layers
through the layers that consume it. What each layer kind does to the channels
flowing in is one rule in a table (``channel_rules``: ``RULES`` for layers that always
matter, ``FLOWING_RULES`` for layers that only matter when prunable channels reach them):
BatchNormalization, DepthwiseConv, pooling, activations, Dropout, Flatten -> Dense
re-indexing, a Reshape that keeps the channel axis, Concatenate offsets, and the
joins (Add / Subtract / Multiply / Average / Maximum / Minimum) that tie channels
so joined tensors lose the same ones; a gating Multiply (squeeze-and-excitation)
takes the gate's units with the channels it gates. A channel that reaches a model
output or a layer the rebuild cannot follow (Lambda, TF-op layers, custom layers, a
Reshape or Permute that moves the channel axis, LayerNormalization, ...) is kept.
The same code serves both Kerases: what differs is asked of an access object
(``keras2_channel_access``, the default, or ``keras3_channel_access``).

Example:

    graph = analyze(model, layer_filter=lambda l: l.name != "stem")
    graph.prunable_layers()   # ['conv2', 'dense1']
    graph.skipped             # {'conv3': "feeds Lambda layer 'lam', ..."}
"""

import dataclasses
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.pruner import channel_rules as rules


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
    access: the access object of the model's Keras (what differs between them).
    producers: name -> _Producer, the selected layers whose channels may go.
    skipped: name -> why a selected layer cannot lose any channel.
    partial: name -> why some of a layer's channels must stay.
  """

  def __init__(self, model, access=None):
    self.model = model
    # The backend's layer access (keras2_channel_access / keras3_channel_access).
    self.access = access
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

  def add_producer(self, name: str, width: int, norm_weight: str) -> None:
    """A selected layer whose ``width`` output channels may go."""
    if name not in self.producers:
      self.producers[name] = _Producer(name, self._uf.add(width), norm_weight)

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



def _keras2_access():
  from tfx_compression.components.pruner import keras2_channel_access  # pylint: disable=g-import-not-at-top
  return keras2_channel_access.ACCESS


def _check_explicit(model, explicit: Collection[str], access) -> None:
  names = {layer.name for layer in model.layers}
  unknown = sorted(set(explicit) - names)
  if unknown:
    raise ChannelPruningError(
        f"Layers {unknown} named for channel pruning are not in model "
        f"'{model.name}' (its layers: {sorted(names)}).")
  for layer in model.layers:
    if (layer.name in explicit
        and access.kind(layer) not in rules.PRODUCER_KINDS):
      raise ChannelPruningError(
          f"Layer '{layer.name}' is a {type(layer).__name__}; channel pruning "
          "removes output channels of Dense, Conv1D, Conv2D, Conv3D and "
          "SeparableConv1D/2D layers only. Remove it from the layer selection.")


# What flows along one tensor: its channel ids, and why its removed channels
# are not zero (None: they are zero).
_Flow = Tuple[Optional[np.ndarray], Optional[str]]


def _follow(graph: ChannelGraph, node, flows: Dict[int, _Flow],
            candidate: Callable[[Any], bool],
            model_outputs: Dict[int, str]) -> None:
  """Applies the rule of one node's layer; records its output's channel ids."""
  access, layer, outs = graph.access, node.layer, node.outs
  in_ids, not_zero = [], []
  kind = access.kind(layer)
  for t in node.ins:
    ids, nz = flows.get(id(t), (None, None))
    if nz is not None and kind not in rules.NOT_ZERO_PASSES:
      graph.fix(ids, nz)  # Not zero where removed: only a gate may take them.
      ids, nz = None, None
    in_ids.append(ids)
    not_zero.append(nz)
  rule = rules.rule_for(kind, any(i is not None for i in in_ids))
  out_ids, blocked, out_nz = None, None, None
  if rule is not None:
    call = rules.Call(graph, access, layer, kind, node.ins, outs, in_ids,
                      candidate(layer),
                      model_outputs.get(id(outs[0])) if outs else None,
                      not_zero, node.args, node.kwargs)
    out_ids, blocked = rule(call)
    out_nz = call.out_not_zero
  if blocked is not None:
    for ids, nz in zip(in_ids, not_zero):
      graph.fix(ids, nz or f"they feed {type(layer).__name__} layer "
                f"'{layer.name}', which the rebuild cannot follow ({blocked})")
    out_ids = None
  for t in outs:
    flows[id(t)] = (out_ids, out_nz) if len(outs) == 1 else (None, None)


def analyze(model, layer_filter: Optional[Callable[[Any], bool]] = None,
            explicit_layers: Optional[Collection[str]] = None,
            access=None) -> ChannelGraph:
  """Finds the output channels of ``model`` that channel pruning may remove.

  Example:

      graph = analyze(model, layer_filter=lambda l: l.name != "stem")
      graph.prunable_layers()   # ['conv2', 'dense1']
      graph.skipped             # {'conv3': "feeds Lambda layer 'lam', ..."}

  Args:
    model: a functional or Sequential model of the Keras ``access`` reads.
    layer_filter: callable(layer) -> bool choosing the candidate layers among
      Dense / Conv1D / Conv2D / Conv3D / SeparableConv1D / SeparableConv2D;
      None: every such layer.
    explicit_layers: names the user listed by exact name. They are candidates
      even if ``layer_filter`` says no, and if one of them cannot be pruned
      (wrong type, blocked by a layer the rebuild cannot follow, produces a
      model output), this fails instead of logging and going on.
    access: ``keras2_channel_access.ACCESS`` (tf_keras, the default) or
      ``keras3_channel_access.ACCESS``.

  Returns:
    The ChannelGraph.

  Raises:
    ChannelPruningError: subclassed model; an explicit layer is unknown, not a
      prunable type, or blocked; no selected layer can lose a channel.
  """
  access = access or _keras2_access()
  access.check_functional(model)
  explicit = set(explicit_layers or ())
  _check_explicit(model, explicit, access)
  graph = ChannelGraph(model, access)
  flows: Dict[int, _Flow] = {}  # id(KerasTensor) -> what flows along it
  outputs = access.outputs(model)
  model_outputs = {id(t): n for t, n in outputs}

  def candidate(layer) -> bool:
    if layer.name in explicit:
      return True
    return layer_filter is None or bool(layer_filter(layer))

  for node in access.nodes(model):
    if not node.is_input:
      _follow(graph, node, flows, candidate, model_outputs)
  for t, out_name in outputs:
    ids, nz = flows.get(id(t), (None, None))
    graph.fix(ids, nz or f"their channels reach the model output '{out_name}'")
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


