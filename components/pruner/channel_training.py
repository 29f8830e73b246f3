"""Channel pruning end to end, for both Kerases: gradual masking, the rebuild, fine-tuning.

``keras2_channels.prune_channels`` (tf_keras) and ``keras3_channels.prune_channels``
(Keras 3) are this module's :func:`prune_channels` with their :class:`Backend`:
the analysis and rebuild on their Keras, their own ``fit`` (compile, fine-tune) and
seeding, and their masking callback, which is :class:`GradualMasks` over their
Keras' Callback and variables.

The steps: the channels to remove are found (``channel_graph.analyze``); a copy of
the model is fine-tuned for ``train_steps`` while the weakest channels (filter L1 /
L2 norm) are masked to zero, more of them on the schedule of
``schedules.schedule_steps`` until the target; the narrow model is rebuilt without
them and fine-tuned for ``finetune_steps`` (cosine to zero).

Example (what ``keras2_channels.prune_channels`` does):

    result = prune_channels(BACKEND, model, train_ds, target_sparsity=0.5,
                            train_steps=200, finetune_steps=100, loss=loss)
"""

import dataclasses
import math
from typing import Any, Callable, ContextManager, Dict, Mapping, Optional

from absl import logging
import numpy as np

from tfx_compression.components.common import progress
from tfx_compression.components.pruner import channel_choice as choice
from tfx_compression.components.pruner import channel_rebuild
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner.channel_graph import short_name


@dataclasses.dataclass
class ChannelPruneResult:
  """What :func:`prune_channels` returns.

  Attributes:
    model: the narrow functional model, fine-tuned and compiled.
    info: 'channels_kept' {layer: n}, 'channels_before' {layer: n} (the original
      counts when ``original_channels`` was given), 'channels_input' {layer: n}
      (counts of the model passed in), 'params_before', 'params_after',
      'macs_before', 'macs_after', 'channel_sparsity' (removed / before over the
      pruned layers), 'skipped' {layer: reason}, 'target_sparsity', 'ranking',
      'norm', and 'eval_loss' when ``eval_ds`` was given.
  """
  model: Any
  info: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Backend:
  """What one Keras brings to :func:`prune_channels`.

  Attributes:
    analyze: (model, layer_filter, explicit_layers) -> ChannelGraph.
    rebuild_narrow: (graph, kept, model=None) -> a new functional model.
    count_macs: model -> multiply-adds of one example.
    fit: (model, ds, steps, learning_rate, loss, parameter, callbacks=None,
      decay=False) -> None; compiles, and trains when steps > 0.
    callback: (graph, classes, targets, schedule, norm) -> a GradualMasks
      Keras callback.
    seeded: seed -> context in which the training runs (seeded when not None).
  """
  analyze: Callable[..., Any]
  rebuild_narrow: Callable[..., Any]
  count_macs: Callable[[Any], int]
  fit: Callable[..., None]
  callback: Callable[..., Any]
  seeded: Callable[[Optional[int]], ContextManager]


def fit(keras, model, ds, steps: int, learning_rate: float, loss,
        parameter: str, callbacks=None, decay: bool = False, metrics=None,
        build_slots: bool = False) -> None:
  """Compiles ``model`` (Adam) and trains it ``steps`` steps on ``ds`` repeated.

  Args:
    keras: the model's Keras module (tf_keras or keras).
    parameter: the step count's parameter name, for messages and progress.
    decay: the learning rate decays to zero (cosine) over the steps.
    metrics: compiled too when given (Keras 3 reports them while training).
    build_slots: make the optimizer's slots before fitting (tf_keras: not
      inside the first traced step, which then traces twice).
  """
  if decay and steps > 0:
    # Cosine to zero: the narrow model ends at a settled point, not wherever
    # the last few steps at full rate left it. On the demo at 75% of the
    # channels, four seeds lost 0.16/0/0.32/0 accuracy points this way, and
    # 0.16/2.2/0/- at a constant rate.
    learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate,
                                                           steps)
  extra = {} if metrics is None else {"metrics": metrics}
  model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                **extra)
  if steps <= 0:
    return
  if build_slots:
    model.optimizer.build(model.trainable_variables)
  if ds is None:
    raise ValueError(f"`train_ds` is None, but `{parameter}`={steps} steps of "
                     "training need it.")
  model.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0,
            callbacks=list(callbacks or []) + [progress.keras_callback(
                progress.Progress(_PHASES.get(parameter, "fine-tuning"), steps),
                keras)])


# What the progress line says of each phase: the phase, not the step count's
# parameter, which is the Pruner's train_steps but the planner's and the
# search's search_steps.
_PHASES = {"train_steps": "fine-tuning, masking channels",
           "finetune_steps": "fine-tuning the narrow model"}


def check_steps(**steps) -> None:
  for name, value in steps.items():
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, int):
      raise TypeError(f"`{name}` must be an int, got {type(value).__name__} "
                      f"{value!r}.")
    if value < (1 if name == "frequency" else 0):
      raise ValueError(f"`{name}` must be >= {1 if name == 'frequency' else 0}, "
                       f"got {value}.")


class GradualMasks:
  """Masks the weakest channels at scheduled steps; keeps them zero after each step.

  A mix-in: a backend subclasses it together with its Keras' Callback and
  says how a mask variable is made (:meth:`_mask_variable`), how a mask is
  applied (:meth:`_multiply`) and compiled (:meth:`_compile`).
  """

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
    self._layers = None

  def _mask_variable(self, init: np.ndarray, var):
    raise NotImplementedError

  def _multiply(self, var, mask):
    raise NotImplementedError

  def _compile(self, fn):
    raise NotImplementedError

  def _bind(self):
    pairs = []
    # Built once: model.get_layer searches the layers at every call.
    self._layers = {layer.name: layer for layer in self.model.layers}
    # Every weight a pruned channel can touch, with ones until it is dropped.
    ones = self._graph_masks(np.zeros(len(self._graph.roots), bool))
    for key, init in ones.items():
      name, s = key
      var = next(w for w in self._layers[name].weights if short_name(w) == s)
      pairs.append((key, var, self._mask_variable(init, var)))
    self._pairs = pairs
    self._apply = self._compile(self._apply_masks)

  def _graph_masks(self, dropped: np.ndarray):
    return channel_rebuild.weight_masks(self._graph, dropped)

  def _apply_masks(self):
    for _, var, mask in self._pairs:
      var.assign(self._multiply(var, mask))

  def update(self, fraction: float):
    if self._pairs is None:
      self._bind()
    targets = {k: int(math.floor(fraction * v + 0.5))
               for k, v in self._targets.items()}
    norms = choice.channel_norms(self.model, self._graph, self._norm,
                                 layers=self._layers)
    self.dropped = choice.choose(self._graph, self._classes, norms, targets,
                                 self.dropped)
    masks = self._graph_masks(choice.expand(self._graph, self.dropped))
    for key, var, mask in self._pairs:
      # tf.DType (tf_keras) or a dtype name (Keras 3).
      dtype = getattr(var.dtype, "as_numpy_dtype", var.dtype)
      mask.assign(masks[key].astype(dtype))
    self._apply()

  def on_train_batch_begin(self, batch, logs=None):
    fraction = self._schedule.get(self._step)
    if fraction is not None:
      self.update(fraction)

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    if self._pairs is not None and self.dropped.any():
      self._apply()


def prune_channels(backend: Backend, model, train_ds, *,
                   target_sparsity: float, ranking: str, norm: str,
                   layer_filter, explicit_layers, train_steps: int,
                   finetune_steps: int, begin_step: int,
                   end_step: Optional[int], frequency: Optional[int],
                   learning_rate: float, loss: Any, seed: Optional[int],
                   eval_ds=None,
                   original_channels: Optional[Mapping[str, int]] = None
                   ) -> ChannelPruneResult:
  """Removes whole filters and neurons with ``backend``, then fine-tunes.

  The arguments are those of ``keras2_channels.prune_channels`` (documented
  there); ``model`` is never modified.
  """
  choice.check_sparsity(target_sparsity)
  choice.check_choice("ranking", ranking, choice.RANKINGS)
  choice.check_choice("norm", norm, choice.NORMS)
  check_steps(train_steps=train_steps, finetune_steps=finetune_steps,
              begin_step=begin_step, end_step=end_step, frequency=frequency)
  schedule = schedules.schedule_steps(train_steps, begin_step, end_step,
                                      frequency)
  graph = backend.analyze(model, layer_filter, explicit_layers)
  targets = choice.removal_targets(graph, target_sparsity, ranking,
                                   original_channels)
  classes = choice.channel_classes(graph)
  logging.info("Channel pruning %s to sparsity %s (%s, %s): %s.",
               graph.prunable_layers(), target_sparsity, ranking, norm,
               graph.channel_counts())
  with backend.seeded(seed):
    work = backend.rebuild_narrow(graph, {})
    callback = backend.callback(graph, classes, targets, schedule, norm)
    if train_steps > 0:
      backend.fit(work, train_ds, train_steps, learning_rate, loss,
                  "train_steps", callbacks=[callback])
    final = choice.choose(graph, classes,
                          choice.channel_norms(work, graph, norm), targets,
                          callback.dropped)
    kept = choice.kept_from_dropped(graph, choice.expand(graph, final))
    narrow = backend.rebuild_narrow(graph, kept, model=work)
    backend.fit(narrow, train_ds, finetune_steps, learning_rate, loss,
                "finetune_steps", decay=True)

  info = _info(backend, graph, model, narrow, kept, original_channels)
  info.update(target_sparsity=float(target_sparsity), ranking=ranking,
              norm=norm)
  if eval_ds is not None:
    info["eval_loss"] = float(narrow.evaluate(eval_ds, verbose=0))
  logging.info("Channel pruning kept %s; params %d -> %d, MACs %d -> %d.",
               info["channels_kept"], info["params_before"],
               info["params_after"], info["macs_before"], info["macs_after"])
  return ChannelPruneResult(narrow, info)


def _info(backend: Backend, graph, model, narrow, kept,
          original_channels) -> Dict[str, Any]:
  """What was removed and what it saved (see :class:`ChannelPruneResult`)."""
  before = graph.channel_counts()
  reference = {n: int((original_channels or {}).get(n, c))
               for n, c in before.items()}
  channels_kept = {n: int(v.size) for n, v in kept.items()}
  return {
      "channels_kept": channels_kept,
      "channels_before": reference,
      "channels_input": before,
      "channel_sparsity": 1.0 - sum(channels_kept.values()) / max(
          1, sum(reference.values())),
      "params_before": int(model.count_params()),
      "params_after": int(narrow.count_params()),
      "macs_before": backend.count_macs(model),
      "macs_after": backend.count_macs(narrow),
      "skipped": dict(graph.skipped),
  }
