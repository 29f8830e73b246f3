"""Magnitude pruning of a Keras 3 model, implemented on Keras 3 (no tfmot).

tensorflow-model-optimization only wraps tf_keras (Keras 2) models and will not
support Keras 3. This module does what its ``prune_low_magnitude`` does, with
the same schedule semantics, on a plain Keras 3 model:

1. clone the model (the caller's model is never touched);
2. keep one 0/1 mask per pruned kernel, as a non-trainable ``keras.Variable``
   held *outside* the model;
3. fine-tune with a callback that, before every optimizer step, counts the step
   as tfmot's ``pruning_step`` does (1 in the first step), recomputes the masks
   on the steps tfmot's schedule says ((step - begin) % frequency == 0 within
   [begin, end]; M:N only at step 1), and multiplies the kernels by their masks
   before the forward pass; the masks are applied again at each epoch end;
4. return the model: no wrapper layer, no extra variable, zeros baked in, so
   ``model.save('m.keras')`` and ``keras.saving.load_model`` need nothing else.

Public API (keyword names parallel to ``pruning.py``, the tf_keras/tfmot path):

    prune_model(model, train_ds, config, *, eval_ds=None, log_dir=None,
                loss=None, custom_objects=None, train_examples=None) -> PruneResult
                  (``pruning.prune_model``, which dispatches here by model type)
    prune_to(model, train_ds, *, target_sparsity, steps, loss, layers=None,
             initial_sparsity=0.0, schedule="polynomial", begin_step=0,
             end_step=None, frequency=None, m_by_n=None, learning_rate=1e-3,
             seed=0, log_dir=None, steps_per_epoch=None, callbacks=()) -> model
    ContinuedPruning(model, layers, *, loss, schedule="polynomial",
                     learning_rate=1e-3, seed=0).stage(train_ds,
                     initial_sparsity, target_sparsity, steps, seed=None)
    make_schedule, Schedule, magnitude_mask, m_by_n_mask: tfmot's schedules and
                  masks (``keras3_masking``, with the fine-tuning callbacks)
    select_layers(model, include, exclude, m_by_n), prunable_layers(model,
                  m_by_n), check_supported(model), clone_model(model)
                  (``keras3_layers``)
    resolve_loss(model, custom_objects), evaluate(model, ds, loss),
    deterministic(seed), check_finite(model, learning_rate) (``keras3_training``)
    pruned_kernels(model, layers), pruning_stats(model, layers),
                  m_by_n_violations(kernel, m_by_n)
    PruneResult, PruningError, NonFiniteLossError, UnsupportedModelError
                  (``strategy``'s, shared with the tf_keras backend)

This module imports neither tfmot nor tf_keras: pruning a Keras 3 model never
sets ``TF_USE_LEGACY_KERAS``.

Example:

    config = PrunerConfig(label_key="label", target_sparsity=0.8, train_steps=300)
    result = prune_model(model, train_ds, config, eval_ds=eval_ds)
    result.model.save("/tmp/pruned.keras")
"""

from typing import Any, Dict, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np

from tfx_compression.components.common import progress
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.common import distillation
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import training_common
# The backend interface (``strategy.backend``) is this module: the pieces
# living in keras3_layers / keras3_masking / keras3_training are named here.
from tfx_compression.components.pruner.keras3_layers import check_supported
from tfx_compression.components.pruner.keras3_layers import clone_model
from tfx_compression.components.pruner.keras3_layers import layer_variables
from tfx_compression.components.pruner.keras3_layers import prunable_layers  # noqa: F401
from tfx_compression.components.pruner.keras3_layers import prunable_weights
from tfx_compression.components.pruner.keras3_layers import select_layers
from tfx_compression.components.pruner.keras3_layers import walk_layers
from tfx_compression.components.pruner.keras3_masking import m_by_n_mask  # noqa: F401
from tfx_compression.components.pruner.keras3_masking import magnitude_mask  # noqa: F401
from tfx_compression.components.pruner.keras3_masking import make_schedule
from tfx_compression.components.pruner.keras3_masking import Masking
from tfx_compression.components.pruner.keras3_masking import MaskSummaries
from tfx_compression.components.pruner.keras3_masking import Schedule
from tfx_compression.components.pruner.keras3_masking import StopOnNonFiniteLoss
from tfx_compression.components.pruner.keras3_training import check_finite
from tfx_compression.components.pruner.keras3_training import deterministic
from tfx_compression.components.pruner.keras3_training import evaluate  # noqa: F401
from tfx_compression.components.pruner.keras3_training import resolve_loss  # noqa: F401
# The result and errors every backend shares; one M:N check for all.
from tfx_compression.components.pruner.m_by_n import m_by_n_violations  # noqa: F401
from tfx_compression.components.pruner.strategy import NonFiniteLossError  # noqa: F401
from tfx_compression.components.pruner.strategy import PruneResult
from tfx_compression.components.pruner.strategy import PruningError  # noqa: F401
from tfx_compression.components.pruner.strategy import UnsupportedModelError  # noqa: F401


# Fine-tuning with masks.


def _fit(model, train_ds, steps: int, epoch: int, masking: Masking,
         learning_rate: float, log_dir: Optional[str], callbacks=()) -> None:
  cbs = [masking, StopOnNonFiniteLoss(learning_rate, masking)]
  if log_dir:
    cbs.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    cbs.append(MaskSummaries(masking, log_dir))
  cbs.extend(callbacks)
  cbs.append(progress.keras_callback(
      progress.Progress("fine-tuning", max(1, steps)), keras))
  model.fit(train_ds.repeat(), steps_per_epoch=epoch, epochs=steps // epoch,
            callbacks=cbs, verbose=0)


def prune_to(model, train_ds, *, target_sparsity: float, steps: int, loss,
             layers: Optional[Sequence[str]] = None,
             initial_sparsity: float = 0.0, schedule: str = "polynomial",
             begin_step: int = 0, end_step: Optional[int] = None,
             frequency: Optional[int] = None,
             m_by_n: Optional[Tuple[int, int]] = None,
             learning_rate: float = 1e-3, seed: int = 0,
             log_dir: Optional[str] = None,
             steps_per_epoch: Optional[int] = None,
             callbacks: Sequence[Any] = (), copy: bool = True):
  """Prunes a copy of ``model`` from its current weights; returns it.

  One pruning stage, as ``pruning.prune_to`` (same arguments, same meaning):
  the schedule ramps from ``initial_sparsity`` to ``target_sparsity``; with
  ``m_by_n`` the M:N mask is set at the first step and kept.
  ``copy=False`` trains ``model`` itself (a caller's private clone), one copy
  of the weights less.

  Returns:
    A new plain Keras 3 model with sparse kernels (and a fresh Adam state).

  Raises:
    NonFiniteLossError: the loss, or a weight, became NaN or infinite.
    UnsupportedModelError: not a Keras 3 functional or Sequential model.

  Example:

      half = prune_to(model, ds, target_sparsity=0.5, steps=200, loss=loss)
      more = prune_to(half, ds, initial_sparsity=0.5, target_sparsity=0.7,
                      steps=200, loss=loss)
  """
  check_supported(model)
  with deterministic(seed):
    plain = clone_model(model) if copy else model
    if layers is None:
      layers = select_layers(plain, m_by_n=m_by_n)
    if m_by_n:
      sched = make_schedule(m_by_n[0] / m_by_n[1], schedule="constant",
                            begin_step=0, end_step=0, frequency=1)
    else:
      begin, end, freq = schedules.resolve_schedule(steps, begin_step,
                                                     end_step, frequency)
      sched = make_schedule(target_sparsity, initial_sparsity, schedule, begin,
                            end, freq)
      logging.info("Pruning %s to %.3f: %s schedule, mask updates at steps "
                   "%d..%d every %d, %d steps in all.", list(layers),
                   target_sparsity, schedule, begin, end, freq, steps)
    masking = Masking(layer_variables(plain, layers), sched, m_by_n)
    plain.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=distillation.train_metrics(loss))
    epoch = training_common.epoch_length(steps, steps_per_epoch, log_dir)
    _fit(plain, train_ds, steps, epoch, masking, learning_rate, log_dir,
         callbacks)
  check_finite(plain, learning_rate)
  # Drop the fine-tuning's Adam state (``model.save`` would write its slots)
  # but keep the loss, so a saved result can be pruned again.
  plain.compile(loss=loss)
  return plain


class ContinuedPruning(training_common.StagedPruning):
  """One compiled model pruned further stage after stage (for the search).

  Each stage moves the schedule from the last stage's sparsity to the next
  target and fine-tunes from the current weights, on the same compiled model:
  no clone, no recompile, no retrace. The Adam state and the masks carry over,
  as in one longer training run (``pruning.ContinuedPruning``'s semantics).
  :meth:`stage` is ``training_common.StagedPruning``'s, as for tf_keras.

  ``model`` always holds the current weights, zeros included; copy it
  (:func:`clone_model`) to keep a stage's result. Used as the tf_keras one
  (``keras2_magnitude.ContinuedPruning``, whose docstring has an example).
  """

  def __init__(self, model, layers: Sequence[str], *, loss,
               schedule: str = "polynomial", learning_rate: float = 1e-3,
               seed: int = 0):
    check_supported(model)
    super().__init__(layers, loss=loss,
                     schedule=Schedule(schedule).kind,  # Checked now.
                     learning_rate=learning_rate, seed=seed)
    self._masking = None
    with deterministic(seed):
      self.model = clone_model(model)

  def _build(self, frequency: int) -> None:
    self._schedule = Schedule(self._schedule_name, frequency=frequency)
    self._masking = Masking(layer_variables(self.model, self._layers),
                            self._schedule)
    with deterministic(self.seed):
      self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                         loss=self._loss,
                         metrics=distillation.train_metrics(self._loss))

  def _fit_stage(self, train_ds, steps: int) -> None:
    _fit(self.model, train_ds, steps, steps, self._masking,
         self.learning_rate, None)

  _deterministic = staticmethod(deterministic)
  _check_finite = staticmethod(check_finite)


# Measuring.


def pruned_kernels(model, layers: Sequence[str]) -> Dict[str, np.ndarray]:
  """'layer/weight' -> array of the pruned weights of ``layers``."""
  by_name = {l.name: l for l in walk_layers(model)}
  out = {}
  for name in layers:
    for w in prunable_weights(by_name[name]):
      short = w.path[len(name) + 1:] if w.path.startswith(name + "/") else w.name
      out[f"{name}/{short}"] = keras.ops.convert_to_numpy(w)
  return out


def pruning_stats(model, layers: Sequence[str]) -> Dict[str, Any]:
  """Achieved sparsity over the pruned kernels, and the model's sizes.

  Returns:
    sparsity, pruned_param_count, pruned_zero_count, param_count, zero_count,
    gzip_weight_bytes (as ``pruning.pruning_stats``).
  """
  return training_common.pruning_stats(model, pruned_kernels(model, layers))


# The whole job.


def prune_model(model, train_ds, config: config_lib.PrunerConfig, *,
                eval_ds=None, log_dir: Optional[str] = None, loss=None,
                custom_objects: Optional[Dict[str, Any]] = None,
                train_examples: Optional[int] = None) -> PruneResult:
  """Prunes a copy of the Keras 3 ``model`` as ``config`` says and measures it.

  ``pruning.prune_model`` itself (it sends a Keras 3 model to this backend, and
  'channels' to ``keras3_channels``): the same arguments, result and errors
  for either Keras.

  Example:

      result = prune_model(model, train_ds, PrunerConfig(target_sparsity=0.8),
                           eval_ds=eval_ds)
      result.stats["sparsity"]  # ~0.8
  """
  check_supported(model)
  from tfx_compression.components.pruner import pruning  # pylint: disable=g-import-not-at-top
  return pruning.prune_model(model, train_ds, config, eval_ds=eval_ds,
                             log_dir=log_dir, loss=loss,
                             custom_objects=custom_objects,
                             train_examples=train_examples)
