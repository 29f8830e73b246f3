"""Fine-tuning helpers for tf_keras (Keras 2) models: loss, evaluation, seeds, NaN checks.

The Keras 2 magnitude backend (``keras2_magnitude``) exposes them to the strategies,
the search and :func:`pruning.prune_model`. No tfmot here.

Example:

    loss, source = resolve_loss(model)   # (SparseCategoricalCrossentropy, 'training config')
    with deterministic(seed=0):
      metrics = evaluate(clone, eval_ds, loss)   # {'loss': ..., 'accuracy': ...}
"""

import contextlib
import math
from typing import Any, Dict, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from tfx_compression.components.pruner import strategy
from tfx_compression.components.pruner.strategy import NonFiniteLossError

def _deserialize_loss(cfg, custom_objects):
  if cfg is None:
    return None
  if isinstance(cfg, str):
    return tf_keras.losses.get(cfg)
  if isinstance(cfg, dict) and "class_name" in cfg:
    return tf_keras.losses.deserialize(cfg, custom_objects=custom_objects)
  if isinstance(cfg, dict):
    return {k: _deserialize_loss(v, custom_objects) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [_deserialize_loss(v, custom_objects) for v in cfg]
  return None


def resolve_loss(model, custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; the loss recorded in the SavedModel's
  training config (a model loaded with compile=False keeps it); else a
  cross-entropy matching the output: BinaryCrossentropy for one output unit,
  SparseCategoricalCrossentropy (integer class labels) otherwise, with
  ``from_logits`` unless the output layer applies sigmoid/softmax.

  Example:

      loss, source = resolve_loss(model)  # (SparseCategoricalCrossentropy, 'training config')
  """
  if getattr(model, "loss", None) is not None and getattr(
      model, "optimizer", None) is not None:
    return model.loss, "compiled model"
  attributes = getattr(model, "_serialized_attributes", None) or {}
  training_config = (attributes.get("metadata") or {}).get("training_config")
  if training_config and training_config.get("loss") is not None:
    try:
      loss = _deserialize_loss(training_config["loss"], custom_objects)
      if loss is not None:
        return loss, "training config"
    except (ValueError, TypeError) as e:
      logging.warning("The saved loss could not be rebuilt (%s); using the "
                      "default cross-entropy. Declare custom losses in the "
                      "module_file's custom_objects.", e)
  return strategy.default_loss(model, tf_keras.losses, "SavedModel")


def _accuracy_metric(model, loss):
  name = type(loss).__name__ if not isinstance(loss, str) else loss
  name = name.lower()
  from_logits = bool(getattr(loss, "get_config", lambda: {})().get(
      "from_logits", False))
  if "binary" in name or (len(model.outputs) == 1
                          and model.outputs[0].shape[-1] == 1):
    return tf_keras.metrics.BinaryAccuracy(
        name="accuracy", threshold=0.0 if from_logits else 0.5)
  if name.startswith("categorical"):
    return tf_keras.metrics.CategoricalAccuracy(name="accuracy")
  return tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  model.compile(loss=loss, metrics=[_accuracy_metric(model, loss)])
  values = model.evaluate(dataset, verbose=0, return_dict=True)
  return {k: float(v) for k, v in values.items()}


# Fine-tuning.


class StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
  """Like TerminateOnNaN, but raises: a NaN model must never be emitted."""

  def __init__(self, learning_rate: float):
    super().__init__()
    self._learning_rate = learning_rate

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      step = int(self.model.optimizer.iterations.numpy())
      raise NonFiniteLossError(
          f"The fine-tuning loss became {float(loss)} at step {step}; "
          "fine-tuning stopped and no model was written. Lower "
          f"`learning_rate` (now {self._learning_rate:g}), check the train "
          "split for NaN or infinite feature values, or check the model's "
          "loss.")


@contextlib.contextmanager
def deterministic(seed: int):
  """Seeds Python, NumPy and TensorFlow, and makes TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was_enabled = tf_config.is_op_determinism_enabled()
  tf_keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_enabled:
      tf_config.disable_op_determinism()



def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite.

  A clipped loss (cross-entropy on probabilities) can stay finite while the
  weights have gone NaN, so the loss check alone is not enough.
  """
  bad = [w.name for w in model.weights if not np.isfinite(w.numpy()).all()]
  if bad:
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    raise NonFiniteLossError(
        f"Fine-tuning left NaN or infinite weights in {bad}; no model was "
        f"written. Lower `learning_rate`{lr}, check the train split for NaN or "
        "infinite feature values, or check the model's loss.")

