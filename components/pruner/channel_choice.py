"""Which channels channel pruning removes: filter norms, targets, the choice.

Channels tied by a join (Add, Multiply, ...) form one class and go together; a
layer never drops below one channel.

Example:

    graph = channel_graph.analyze(model)
    kept = select_channels(model, graph, 0.5)   # {'conv1': array([0, 3, ...])}
"""

import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfx_compression.components.pruner.channel_graph import ChannelGraph
from tfx_compression.components.pruner.channel_graph import ChannelPruningError
from tfx_compression.components.pruner.channel_graph import FIXED
from tfx_compression.components.pruner.channel_graph import layer_weights
from tfx_compression.components.pruner.channel_graph import short_name

RANKINGS = ("per_layer", "global")
NORMS = ("l1", "l2")


def check_choice(parameter: str, value, allowed) -> None:
  if value not in allowed:
    raise ValueError(f"`{parameter}` must be one of {allowed}, got {value!r}.")


def check_sparsity(value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise TypeError(f"`target_sparsity` must be a float in [0, 1), got "
                    f"{type(value).__name__} {value!r}.")
  if not 0.0 <= float(value) < 1.0:
    raise ValueError(f"`target_sparsity` must be in [0, 1) (the fraction of "
                     f"channels removed), got {value}.")



def channel_norms(model, graph: ChannelGraph, norm: str = "l1",
                  layers: Optional[Mapping[str, Any]] = None
                  ) -> Dict[str, np.ndarray]:
  """L1 or L2 norm of each output filter/neuron of every prunable layer.

  For SeparableConv layers the filter is the pointwise kernel's column.
  ``layers`` (name -> layer of ``model``) spares a caller that asks often
  ``model.get_layer``'s search through the layers.
  """
  if norm not in NORMS:
    raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")
  out = {}
  for name in graph.prunable_layers():
    if layers is None:
      w = layer_weights(model, name)[graph.producers[name].norm_weight]
    else:
      wanted = graph.producers[name].norm_weight
      w = [v for v in layers[name].weights if short_name(v) == wanted][-1].numpy()
    w = w.reshape(-1, w.shape[-1])
    out[name] = (np.abs(w).sum(0) if norm == "l1"
                 else np.sqrt((w.astype(np.float64) ** 2).sum(0)))
  return out


@dataclasses.dataclass
class ChannelClasses:
  """Removable channel classes (channels joined so they go together)."""
  roots: np.ndarray                    # class root per class
  members: List[List[Tuple[str, int]]]  # (layer, channel) per class
  comp: np.ndarray                      # component index per class
  # Built on first use by ``choose`` (the classes never change): the members
  # as positions in the layers' norms laid end to end, grouped by class size,
  # and each class's channel loss per layer.
  _index: Any = dataclasses.field(default=None, init=False, repr=False,
                                  compare=False)

  def index(self, sizes: Mapping[str, int]):
    """(layer order, [(classes of size k, (n, k) positions)], losses)."""
    order = (tuple(sorted({p for m in self.members for p, _ in m}))
             if self._index is None else self._index[1])
    key = tuple((n, int(sizes[n])) for n in order)
    if self._index is None or self._index[0] != key:
      offset, start = {}, 0
      for n, size in key:
        offset[n] = start
        start += size
      by_size: Dict[int, List[int]] = {}
      for i, m in enumerate(self.members):
        by_size.setdefault(len(m), []).append(i)
      groups = []
      for k, which in sorted(by_size.items()):
        positions = np.array([[offset[p] + c for p, c in self.members[i]]
                              for i in which], np.int64).reshape(len(which), k)
        groups.append((np.array(which, np.int64), positions))
      losses = []
      for m in self.members:
        loss: Dict[str, int] = {}
        for p, _ in m:
          loss[p] = loss.get(p, 0) + 1
        losses.append(tuple(loss.items()))
      self._index = (key, order, groups, losses)
    return self._index[1:]


def channel_classes(graph: ChannelGraph) -> ChannelClasses:
  by_root: Dict[int, List[Tuple[str, int]]] = {}
  comp_of: Dict[int, int] = {}
  for g, names in enumerate(graph.components):
    for name in names:
      ids = graph.producers[name].ids
      for c, r in enumerate(graph.roots[ids].tolist()):
        if r == FIXED:
          continue
        by_root.setdefault(r, []).append((name, c))
        comp_of[r] = g
  roots = np.array(sorted(by_root), dtype=np.int64)
  return ChannelClasses(roots, [by_root[r] for r in roots.tolist()],
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
  check_choice("ranking", ranking, RANKINGS)
  check_sparsity(target_sparsity)
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


def _class_scores(classes: ChannelClasses, scaled: Mapping[str, np.ndarray],
                  order, groups) -> np.ndarray:
  """Mean scaled norm of each class's members, as np.mean of their list.

  One gather and one row mean per class size instead of a Python list and an
  np.mean per class (11k classes on ResNet50). The rows are C-contiguous, so
  numpy sums each row as it sums a 1-D array (pairwise): the same float result.
  """
  if not classes.members:
    return np.array([])
  if len({scaled[n].dtype for n in order}) != 1:  # Mixed precisions: np.mean's per-class promotion.
    return np.array([np.mean([scaled[p][c] for p, c in m])
                     for m in classes.members])
  flat = np.concatenate([scaled[n] for n in order])
  score = np.empty(len(classes.members), flat.dtype)
  for which, positions in groups:
    score[which] = np.mean(flat[positions], axis=1)
  return score


def choose(graph: ChannelGraph, classes: ChannelClasses,
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
  order, groups, losses = classes.index({n: v.size for n, v in norms.items()})
  score = _class_scores(classes, scaled, order, groups)
  kept = {n: int(graph.producers[n].ids.size - per_id[graph.producers[n].ids].sum())
          for names in graph.components for n in names}
  is_dropped = dropped[classes.roots]

  def pick(candidates: np.ndarray, n: int) -> None:
    for k in candidates[np.argsort(score[candidates], kind="stable")]:
      if n <= 0:
        return
      if is_dropped[k]:
        continue
      loss = losses[k]
      if any(kept[p] - d < 1 for p, d in loss):
        continue
      for p, d in loss:
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


def expand(graph: ChannelGraph, dropped_roots: np.ndarray) -> np.ndarray:
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
  classes = channel_classes(graph)
  dropped = choose(graph, classes, channel_norms(model, graph, norm), targets,
                    np.zeros(len(graph.roots), bool))
  return kept_from_dropped(graph, expand(graph, dropped))


def kept_from_dropped(graph: ChannelGraph,
                       dropped_ids: np.ndarray) -> Dict[str, np.ndarray]:
  return {n: np.where(~dropped_ids[graph.producers[n].ids])[0]
          for n in graph.prunable_layers()}


def dropped_from_kept(graph: ChannelGraph,
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
    if r == FIXED or not dropped[members].all():
      raise ChannelPruningError(
          "The channels to keep disagree across joined layers (Add, Multiply, "
          "...) or drop channels that must stay; choose them with "
          "select_channels.")
  return dropped

