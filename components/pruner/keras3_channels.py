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

from tfx_compression.components.common import distillation
from tfx_compression.components.common import progress
from tfx_compression.components.pruner import channel_choice as choice
from tfx_compression.components.pruner import channel_graph
from tfx_compression.components.pruner import channel_rebuild
from tfx_compression.components.pruner import keras3_magnitude
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner.channel_choice import select_channels  # noqa: F401
from tfx_compression.components.pruner.channel_graph import ChannelGraph
from tfx_compression.components.pruner.channel_graph import ChannelPruningError  # noqa: F401
from tfx_compression.components.pruner.channel_rebuild import rebuild_narrow  # noqa: F401
from tfx_compression.components.pruner.channel_rebuild import weight_masks
from tfx_compression.components.pruner.channel_rebuild import zero_channels  # noqa: F401
from tfx_compression.components.pruner.keras3_channel_access import ACCESS

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
# The analysis and the rebuild: channel_graph and channel_rebuild, on Keras 3.
# --------------------------------------------------------------------------


def analyze(model, layer_filter: Optional[Callable[[Any], bool]] = None,
            explicit_layers: Optional[Collection[str]] = None) -> ChannelGraph:
  """Finds the output channels of the Keras 3 ``model`` that may be removed.

  Same arguments, rules and errors as ``channel_graph.analyze`` (tf_keras).

  Example:

      graph = analyze(model, layer_filter=lambda l: l.name != "stem")
      graph.prunable_layers()   # ['conv2', 'dense1']
  """
  return channel_graph.analyze(model, layer_filter, explicit_layers,
                               access=ACCESS)


def count_macs(model) -> int:
  """Multiply-adds of one example through Dense and convolution layers."""
  return channel_rebuild.count_macs(model, ACCESS)


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
                 if channel_graph.short_name(w) == s)
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
