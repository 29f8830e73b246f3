"""Keras 2 backend of weight pruning: tensorflow-model-optimization on tf_keras models.

What a user would write by hand from the tfmot guide:

1. clone the model (tfmot wraps the layer objects it is given, so the caller's
   model is never touched);
2. wrap the selected layers with ``prune_low_magnitude`` (a PolynomialDecay or
   ConstantSparsity schedule, or an M:N mask);
3. fine-tune with ``UpdatePruningStep`` (and ``PruningSummaries`` for TensorBoard);
4. ``strip_pruning``, leaving plain Keras layers with zeros in their kernels.

:func:`prune_to` is one such stage from the model's current weights;
:class:`ContinuedPruning` runs a whole search on one wrapped model. This module
imports tfmot, so it is imported only when a tf_keras model is pruned
(``strategy.backend``); ``keras3_magnitude`` offers the same functions for
Keras 3 models.

Example:

    layers = select_layers(model, include=["conv*"])
    pruned = prune_to(model, train_ds, target_sparsity=0.8, steps=300,
                      loss=loss, layers=layers)
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfx_compression.components.common import progress
from tfx_compression.components.pruner import keras2_mask_select
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import training_common
from tfx_compression.components.pruner.keras2_training import check_finite
from tfx_compression.components.pruner.keras2_training import deterministic
from tfx_compression.components.pruner.keras2_training import evaluate  # noqa: F401  (the backend interface)
from tfx_compression.components.pruner.keras2_training import resolve_loss  # noqa: F401  (the backend interface)
from tfx_compression.components.pruner.keras2_training import StopOnNonFiniteLoss
from tfx_compression.components.pruner.strategy import UnsupportedModelError

_sparsity = tfmot.sparsity.keras

# Which layers can be pruned.


def _walk_layers(model):
  """Layers of a model, descending into nested models."""
  return training_common.walk_layers(model, tf_keras.Model)


def _prunable_weights(layer) -> list:
  """The weights tfmot prunes in ``layer`` ([] if it cannot or has none)."""
  if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
    layer = layer.layer
  if isinstance(layer, _sparsity.PrunableLayer) or hasattr(
      layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  registry = prune_registry.PruneRegistry
  if not registry.supports(layer):
    return []
  if registry._is_rnn_layer(layer) or registry._is_mha_layer(layer):  # pylint: disable=protected-access
    # Nested weight lookups: let tfmot attach its accessor (harmless: it only
    # adds the method tfmot's wrapper would add anyway).
    return list(registry.make_prunable(layer).get_prunable_weights())
  return [getattr(layer, name) for name in registry._weight_names(layer)]  # pylint: disable=protected-access


def prunable_layers(model, m_by_n: Optional[Tuple[int, int]] = None
                   ) -> "Dict[str, Any]":
  """Name -> layer for every layer tfmot can prune (with an M:N block if given).

  A layer counts when tfmot supports it (built-in Dense, Conv, Embedding, RNN
  ... or a ``PrunableLayer``) and it has weights to prune.

  Example:

      list(prunable_layers(model))  # ['conv1', 'conv2', 'dense1', 'probabilities']
  """
  return training_common.prunable_layers(_walk_layers(model),
                                         _prunable_weights, m_by_n)


def select_layers(model, include: Sequence[str] = (),
                  exclude: Sequence[str] = (),
                  m_by_n: Optional[Tuple[int, int]] = None) -> List[str]:
  """Names of the layers to prune, from fnmatch patterns on layer names.

  Args:
    model: a functional or Sequential tf_keras model.
    include: patterns; empty means every prunable layer.
    exclude: patterns of layers never to prune.
    m_by_n: (M, N) when pruning M:N blocks (layers whose input dimension is not
      a multiple of N are not prunable then).

  Returns:
    Layer names, in the model's order.

  Raises:
    ValueError: a pattern matches no prunable layer, or nothing is left.

  Example:

      select_layers(model, include=["conv*", "dense1"])  # ['conv1', 'conv2', 'dense1']
  """
  check_supported(model)
  return training_common.select_layers(
      lambda blocks: prunable_layers(model, blocks), include, exclude, m_by_n)


def check_supported(model) -> None:
  """Raises UnsupportedModelError unless tfmot can wrap ``model``'s layers."""
  if not isinstance(model, tf_keras.Model):
    raise UnsupportedModelError(
        f"The model is a {type(model).__name__}, not a tf_keras Model; the "
        "Pruner needs a Keras (tf_keras) functional or Sequential model.")
  if isinstance(model, tf_keras.Sequential) or getattr(
      model, "_is_graph_network", False):
    return
  layers = [f"{l.name} ({type(l).__name__})" for l in model.layers]
  can = [l.name for l in model.layers if _prunable_weights(l)]
  raise UnsupportedModelError(
      f"The model is a subclassed Keras model ({type(model).__name__}), which "
      "tfmot cannot wrap: prune_low_magnitude only rebuilds Sequential and "
      f"functional models. Its layers: {layers or 'none tracked'}; of these tfmot "
      f"supports {can or 'none'}. Build the model with the functional API "
      "(keras.Model(inputs, outputs)) or keras.Sequential in the Trainer "
      "module.")


# Cloning, wrapping, stripping.


def clone_model(model):
  """A copy with the same weights (new layer objects and variables)."""
  check_supported(model)
  try:
    clone = tf_keras.models.clone_model(model)
  except NotImplementedError:
    # A layer tracked outside the graph and revived without a config (TFX's
    # `model.tft_layer` when the Trainer used Transform) stops Keras' cloning,
    # which serializes every tracked layer. Rebuild the graph from its nodes
    # instead: new layers, the same weights, the attached layer left out.
    # pylint: disable=g-import-not-at-top
    from tfx_compression.components.pruner import channel_graph
    from tfx_compression.components.pruner import channel_rebuild
    # pylint: enable=g-import-not-at-top
    clone = channel_rebuild.rebuild_narrow(channel_graph.analyze(model), {})
    logging.info("Cloned %s from its graph (a layer outside the graph has no "
                 "config).", model.name)
    return clone
  clone.set_weights(model.get_weights())
  return clone


def is_wrapped(model) -> bool:
  return any(isinstance(l, pruning_wrapper.PruneLowMagnitude)
             for l in _walk_layers(model))


def _wrap(model, names: Sequence[str], params: Mapping[str, Any]):
  """A model whose selected layers are wrapped; reuses ``model``'s layers."""
  names = set(names)

  def clone_fn(layer):
    if isinstance(layer, tf_keras.Model):
      return tf_keras.models.clone_model(layer, clone_function=clone_fn)
    if layer.name in names:
      return _sparsity.prune_low_magnitude(layer, **params)
    return layer

  wrapped = tf_keras.models.clone_model(model, clone_function=clone_fn)
  # The same masks as tfmot's, found by selection instead of a full sort.
  keras2_mask_select.use_selection(_walk_layers(wrapped))
  return wrapped


# Pruning.


def _fit(wrapped, train_ds: tf.data.Dataset, steps: int, epoch: int,
         learning_rate: float, log_dir: Optional[str], callbacks=()) -> None:
  """Fine-tunes the wrapped model ``steps`` steps, in epochs of ``epoch``."""
  cbs = [_sparsity.UpdatePruningStep(), StopOnNonFiniteLoss(learning_rate)]
  if log_dir:
    cbs.append(_sparsity.PruningSummaries(log_dir=log_dir))
  cbs.extend(callbacks)
  cbs.append(progress.keras_callback(
      progress.Progress("fine-tuning", max(1, steps))))
  wrapped.fit(train_ds.repeat(), steps_per_epoch=epoch, epochs=steps // epoch,
              callbacks=cbs, verbose=0)


class ContinuedPruning(training_common.StagedPruning):
  """One wrapped, compiled model pruned further stage after stage.

  What an iterative search needs: each stage ramps the sparsity from the last
  stage's to the next target and fine-tunes from the current weights, without
  cloning, re-wrapping, recompiling or retracing (each of those costs seconds
  per stage on a small model, more than the fine-tuning itself). The Adam state
  carries over from stage to stage, as in one longer training run.

  ``model`` (the plain view) shares its variables with the wrapped model: it
  always holds the current weights, zeros included. Copy it
  (:func:`clone_model`) to keep a stage's result. :meth:`stage` is
  ``training_common.StagedPruning``'s, as for Keras 3.

  Example:

      run = ContinuedPruning(model, layers, loss=loss)
      run.stage(ds, 0.0, 0.5, steps=300); run.model  # 50% sparse
      run.stage(ds, 0.5, 0.7, steps=300); run.model  # 70%, from those weights
  """

  def __init__(self, model, layers: Sequence[str], *, loss,
               schedule: str = "polynomial", learning_rate: float = 1e-3,
               seed: int = 0):
    check_supported(model)
    if is_wrapped(model):
      model = _sparsity.strip_pruning(model)
    super().__init__(layers, loss=loss, schedule=schedule,
                     learning_rate=learning_rate, seed=seed)
    with deterministic(seed):
      self._plain = clone_model(model)
    self._wrapped = None
    self.model = self._plain

  def _build(self, frequency: int) -> None:
    self._schedule = schedules.StagedSchedule(self._schedule_name, frequency)
    with deterministic(self.seed):
      self._wrapped = _wrap(self._plain, self._layers,
                            {"pruning_schedule": self._schedule})
      self._wrapped.compile(
          optimizer=tf_keras.optimizers.Adam(self.learning_rate),
          loss=self._loss)
    # The wrappers hold the very layers of self._plain: stripping gives a plain
    # model over the same variables.
    self.model = _sparsity.strip_pruning(self._wrapped)

  def _fit_stage(self, train_ds: tf.data.Dataset, steps: int) -> None:
    _fit(self._wrapped, train_ds, steps, steps, self.learning_rate, None)

  _deterministic = staticmethod(deterministic)
  _check_finite = staticmethod(check_finite)


def prune_to(model, train_ds: tf.data.Dataset, *, target_sparsity: float,
             steps: int, loss, layers: Optional[Sequence[str]] = None,
             initial_sparsity: float = 0.0, schedule: str = "polynomial",
             begin_step: int = 0, end_step: Optional[int] = None,
             frequency: Optional[int] = None,
             m_by_n: Optional[Tuple[int, int]] = None,
             learning_rate: float = 1e-3, seed: int = 0,
             log_dir: Optional[str] = None,
             steps_per_epoch: Optional[int] = None,
             callbacks: Sequence[tf_keras.callbacks.Callback] = (),
             copy: bool = True):
  """Prunes a copy of ``model`` from its current weights; returns it stripped.

  One pruning stage: the schedule ramps from ``initial_sparsity`` to
  ``target_sparsity``. Weights already zero have the least magnitude, so a
  model pruned to sparsity a and pruned again with initial_sparsity=a keeps its
  zeros and goes on to the new target: an iterative search calls this stage
  after stage (the Adam state starts afresh at each stage).

  Args:
    model: functional or Sequential tf_keras model, plain or still wrapped by
      tfmot (then stripped first). Never modified, unless ``copy`` is False.
    train_ds: (features, label) batches; repeated if it runs out.
    target_sparsity: fraction of zeros in each pruned kernel at the end
      (ignored with ``m_by_n``).
    steps: optimizer steps.
    loss: Keras loss (see :func:`resolve_loss`).
    layers: names of layers to prune; None: every prunable layer.
    initial_sparsity: sparsity at ``begin_step`` (polynomial schedule).
    schedule: 'polynomial' or 'constant'.
    begin_step, end_step, frequency: when the mask is updated, counted from 0;
      None end_step/frequency are chosen as in
      :func:`schedules.resolve_schedule`.
    m_by_n: (M, N): M zeros in every N consecutive input weights, set once at
      the first step; the whole fine-tuning then recovers.
    learning_rate: Adam learning rate.
    seed: seed for TensorFlow ops (and the global seeds).
    log_dir: TensorBoard directory (training and tfmot pruning summaries).
    steps_per_epoch: Keras epoch length; must divide ``steps``.
    callbacks: more Keras callbacks.
    copy: False trains ``model``'s own layers instead of a copy's: for a
      caller that passes its private clone (the Pruner does), one copy of
      the weights less at the peak (94 MB on ResNet50). ``model`` then ends
      with the pruned weights.

  Returns:
    A new tf_keras model with plain layers and sparse kernels.

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    UnsupportedModelError: a subclassed model.

  Example:

      half = prune_to(model, ds, target_sparsity=0.5, steps=200, loss=loss)
      more = prune_to(half, ds, initial_sparsity=0.5, target_sparsity=0.7,
                      steps=200, loss=loss)
  """
  check_supported(model)
  if is_wrapped(model):
    model = _sparsity.strip_pruning(model)
  with deterministic(seed):
    plain = clone_model(model) if copy else model
    if layers is None:
      layers = select_layers(plain, m_by_n=m_by_n)
    if m_by_n:
      # tfmot sets an M:N mask once, at step 1, whatever the schedule says.
      pruning_schedule = _sparsity.ConstantSparsity(
          m_by_n[0] / m_by_n[1], begin_step=1, end_step=1, frequency=1)
      params = {"pruning_schedule": pruning_schedule,
                "sparsity_m_by_n": tuple(m_by_n)}
    else:
      begin, end, freq = schedules.resolve_schedule(steps, begin_step,
                                                     end_step, frequency)
      params = {"pruning_schedule": schedules.make_schedule(
          target_sparsity, initial_sparsity, schedule, begin, end, freq)}
      logging.info("Pruning %s to %.3f: %s schedule, mask updates at steps "
                   "%d..%d every %d, %d steps in all.", list(layers),
                   target_sparsity, schedule, begin, end, freq, steps)
    wrapped = _wrap(plain, layers, params)
    wrapped.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                    loss=loss)
    epoch = training_common.epoch_length(steps, steps_per_epoch, log_dir)
    _fit(wrapped, train_ds, steps, epoch, learning_rate, log_dir, callbacks)
    # UpdatePruningStep re-applies the masks at each epoch end, so the
    # stripped kernels hold exact zeros.
    stripped = _sparsity.strip_pruning(wrapped)
  check_finite(stripped, learning_rate)
  return stripped



# Measuring.


def pruned_kernels(model, layers: Sequence[str]) -> Dict[str, np.ndarray]:
  """'layer/weight' -> array of the weights tfmot prunes in ``layers``."""
  by_name = {l.name: l for l in _walk_layers(model)}
  out = {}
  for name in layers:
    for w in _prunable_weights(by_name[name]):
      out[f"{name}/{w.name.split('/')[-1].split(':')[0]}"] = w.numpy()
  return out



def pruning_stats(model, layers: Sequence[str]) -> Dict[str, Any]:
  """Achieved sparsity over the pruned kernels, and the model's sizes.

  Returns:
    sparsity (zeros / size over the pruned layers' kernels), pruned_param_count,
    pruned_zero_count, param_count and zero_count (every weight),
    gzip_weight_bytes (gzip of all weights).
  """
  return training_common.pruning_stats(model, pruned_kernels(model, layers))

