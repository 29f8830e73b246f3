"""Fine-tuning pieces both pruning backends share, each taking the Keras it works on.

The tf_keras (Keras 2, ``keras2_training`` / ``keras2_magnitude``) and the
Keras 3 (``keras3_training`` / ``keras3_layers`` / ``keras3_magnitude``)
backends differ in where a saved loss is kept, how a weight is named and read,
and how masks are kept (tfmot's wrappers, or ``keras3_masking``); what follows
is the same logic for both, so it is written once: the backend passes its
``keras`` module (``tf_keras`` or ``keras``) or the few functions that differ.
No Keras is imported here.

Example:

    loss, source = resolve_loss(model, keras, model._compile_config.config.get("loss"),
                                "model file")
    with deterministic(keras, seed=0):
      metrics = evaluate(keras, clone, eval_ds, loss)   # {'loss': ..., 'accuracy': ...}
"""

import contextlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.common import model_stats
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import strategy
from tfx_compression.components.pruner.strategy import NonFiniteLossError


# Layers.


def walk_layers(model, model_type) -> Iterator[Any]:
  """Layers of a model, descending into nested models (of ``model_type``)."""
  for layer in model.layers:
    if isinstance(layer, model_type):
      yield from walk_layers(layer, model_type)
    else:
      yield layer


def _m_by_n_ok(weight, m_by_n: Tuple[int, int]) -> bool:
  # Blocks run along the input dimension (axis -2 of a Dense or Conv kernel);
  # tfmot rearranges rank-2 and rank-4 kernels only, and a dimension that is
  # not a multiple of N has no full block to sparsify.
  return len(weight.shape) in (2, 4) and weight.shape[-2] % m_by_n[1] == 0


def prunable_layers(layers: Iterable[Any],
                    prunable_weights: Callable[[Any], list],
                    m_by_n: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
  """Name -> layer for the ``layers`` with weights to prune (M:N blocks if given)."""
  out = {}
  for layer in layers:
    weights = prunable_weights(layer)
    if not weights:
      continue
    if m_by_n and not all(_m_by_n_ok(w, m_by_n) for w in weights):
      continue
    out[layer.name] = layer
  return out


def select_layers(prunable: Callable[[Optional[Tuple[int, int]]], Dict[str, Any]],
                  include: Sequence[str], exclude: Sequence[str],
                  m_by_n: Optional[Tuple[int, int]]) -> List[str]:
  """``strategy.match_layers`` over ``prunable(m_by_n)`` (the backend's layers).

  With ``m_by_n``, the layers prunable but not in M:N blocks are named too, so
  the error can say why a pattern matched nothing.
  """
  names = list(prunable(m_by_n))
  others = ([n for n in prunable(None) if n not in names] if m_by_n else [])
  return strategy.match_layers(names, include, exclude, m_by_n, others)


# Loss and evaluation.


def deserialize_loss(cfg, custom_objects, losses):
  """A loss from its saved form (name, config, or nested), with ``losses`` of a Keras."""
  if cfg is None:
    return None
  if isinstance(cfg, str):
    return losses.get(cfg)
  if isinstance(cfg, dict) and "class_name" in cfg:
    return losses.deserialize(cfg, custom_objects=custom_objects)
  if isinstance(cfg, dict):
    return {k: deserialize_loss(v, custom_objects, losses) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [deserialize_loss(v, custom_objects, losses) for v in cfg]
  # A SavedModel's training config is JSON, so only Keras 3's compile config
  # can hold a loss object or function here.
  return cfg if isinstance(cfg, losses.Loss) or callable(cfg) else None


def resolve_loss(model, keras_module, saved_loss, saved_in: str,
                 custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; ``saved_loss`` (the loss kept in the
  saved model's training or compile config, found by the backend); else
  ``strategy.default_loss``.

  Args:
    model: a tf_keras or Keras 3 model.
    keras_module: that model's Keras (``tf_keras`` or ``keras``).
    saved_loss: the saved loss's serialized form, or None.
    saved_in: where a compiled model keeps its loss ("SavedModel", "model file").
    custom_objects: the module_file's custom objects, for a custom loss.
  """
  if getattr(model, "loss", None) is not None and getattr(
      model, "optimizer", None) is not None:
    return model.loss, "compiled model"
  if saved_loss is not None:
    try:
      loss = deserialize_loss(saved_loss, custom_objects, keras_module.losses)
      if loss is not None:
        return loss, "training config"
    except (ValueError, TypeError) as e:
      logging.warning("The saved loss could not be rebuilt (%s); using the "
                      "default cross-entropy. Declare custom losses in the "
                      "module_file's custom_objects.", e)
  return strategy.default_loss(model, keras_module.losses, saved_in)


def accuracy_metric(model, loss, metrics):
  """The accuracy matching ``loss`` and the output, from ``metrics`` of a Keras."""
  name = (loss if isinstance(loss, str) else type(loss).__name__).lower()
  from_logits = bool(getattr(loss, "get_config", lambda: {})().get(
      "from_logits", False))
  if "binary" in name or (len(model.outputs) == 1
                          and model.outputs[0].shape[-1] == 1):
    return metrics.BinaryAccuracy(
        name="accuracy", threshold=0.0 if from_logits else 0.5)
  if name.startswith("categorical"):
    return metrics.CategoricalAccuracy(name="accuracy")
  return metrics.SparseCategoricalAccuracy(name="accuracy")


def evaluate(keras_module, model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  model.compile(loss=loss,
                metrics=[accuracy_metric(model, loss, keras_module.metrics)])
  values = model.evaluate(dataset, verbose=0, return_dict=True)
  return {k: float(v) for k, v in values.items()}


@contextlib.contextmanager
def deterministic(keras_module, seed: int):
  """Seeds Python, NumPy, TensorFlow and the Keras; TF ops deterministic.

  Op determinism is global to the process; it is restored on exit. A Keras 3
  on another backend than TensorFlow is only seeded.
  """
  keras_module.utils.set_random_seed(seed)
  if keras_module.backend.backend() != "tensorflow":
    yield
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was_enabled = tf_config.is_op_determinism_enabled()
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_enabled:
      tf_config.disable_op_determinism()


# NaN checks.


def non_finite_loss(loss: float, step: int,
                    learning_rate: float) -> NonFiniteLossError:
  """The error a fine-tuning raises when its loss becomes NaN or infinite."""
  return NonFiniteLossError(
      f"The fine-tuning loss became {loss} at step {step}; "
      "fine-tuning stopped and no model was written. Lower "
      f"`learning_rate` (now {learning_rate:g}), check the train "
      "split for NaN or infinite feature values, or check the model's "
      "loss.")


def check_finite(named_weights: Iterable[Tuple[str, np.ndarray]],
                 learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite.

  A clipped loss (cross-entropy on probabilities) can stay finite while the
  weights have gone NaN, so the loss check alone is not enough.

  Args:
    named_weights: (name, value) of every weight of the model.
    learning_rate: the fine-tuning's, named in the message.
  """
  bad = [name for name, value in named_weights if not np.isfinite(value).all()]
  if bad:
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    raise NonFiniteLossError(
        f"Fine-tuning left NaN or infinite weights in {bad}; no model was "
        f"written. Lower `learning_rate`{lr}, check the train split for NaN or "
        "infinite feature values, or check the model's loss.")


# Measuring.


def pruning_stats(model, kernels: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """Achieved sparsity over the pruned ``kernels``, and the model's sizes.

  Returns:
    sparsity (zeros / size over the pruned kernels), pruned_param_count,
    pruned_zero_count, param_count and zero_count (every weight),
    gzip_weight_bytes (gzip of all weights).
  """
  size = sum(k.size for k in kernels.values())
  zeros = sum(int((k == 0).sum()) for k in kernels.values())
  whole = model_stats.sparsity_stats(model)
  return {
      "sparsity": zeros / size if size else 0.0,
      "pruned_param_count": int(size),
      "pruned_zero_count": int(zeros),
      "param_count": whole["param_count"],
      "zero_count": whole["zero_count"],
      "gzip_weight_bytes": model_stats.weights_gzip_bytes(
          model_stats.model_weights(model)),
  }


# Fine-tuning.


def epoch_length(steps: int, steps_per_epoch: Optional[int],
                 log_dir: Optional[str]) -> int:
  """Steps per Keras epoch of a fine-tuning of ``steps`` steps.

  One epoch, unless ``steps_per_epoch`` is given or TensorBoard logs are
  written (several epochs only serve the logs: ``schedules.epoch_length``).

  Raises:
    ValueError: the epoch does not divide ``steps``.
  """
  epoch = steps_per_epoch or (
      schedules.epoch_length(steps) if log_dir else steps)
  if steps % epoch:
    raise ValueError(f"steps_per_epoch={epoch} does not divide steps={steps}.")
  return epoch


# Search stages.


class StagedPruning:
  """What both backends' ``ContinuedPruning.stage`` do around their own fit.

  A subclass calls ``__init__``, sets ``model`` and, in ``_build(frequency)``,
  ``_schedule`` (an object with ``frequency`` and ``set_stage``); it defines
  ``_fit_stage(train_ds, steps)``, ``_deterministic(seed)`` and
  ``_check_finite(model, learning_rate)``.
  """

  _schedule = None

  def __init__(self, layers: Sequence[str], *, loss, schedule: str,
               learning_rate: float, seed: int):
    self.learning_rate = learning_rate
    self.seed = seed
    self.steps_done = 0
    self._schedule_name = schedule
    self._layers = list(layers)
    self._loss = loss

  def stage(self, train_ds, initial_sparsity: float, target_sparsity: float,
            steps: int, seed: Optional[int] = None):
    """Ramps from ``initial_sparsity`` to ``target_sparsity`` over ``steps``.

    Returns:
      The model (the shared one) after the stage.
    """
    begin, end, freq = schedules.resolve_schedule(steps, 0, None, None)
    if self._schedule is None:
      self._build(freq)
    elif freq != self._schedule.frequency:
      raise ValueError(f"Every stage must have the same length (first: "
                       f"frequency {self._schedule.frequency}, now {freq}).")
    self._schedule.set_stage(initial_sparsity, target_sparsity,
                             self.steps_done + begin + 1,
                             self.steps_done + end + 1)
    logging.info("Pruning %s from %.3f to %.3f: mask updates at steps %d..%d "
                 "every %d (of %d).", self._layers, initial_sparsity,
                 target_sparsity, self.steps_done + begin,
                 self.steps_done + end, freq, self.steps_done + steps)
    with self._deterministic(self.seed if seed is None else seed):
      self._fit_stage(train_ds, steps)
    self.steps_done += steps
    self._check_finite(self.model, self.learning_rate)
    return self.model
