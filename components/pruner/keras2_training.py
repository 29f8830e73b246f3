"""Fine-tuning helpers for tf_keras (Keras 2) models: loss, evaluation, seeds, NaN checks.

The Keras 2 magnitude backend (``keras2_magnitude``) exposes them to the strategies,
the search and :func:`pruning.prune_model`. No tfmot here. The logic is
``training_common``'s, shared with Keras 3; here is what tf_keras keeps apart
(the loss in the SavedModel's training config, weight names, the callback class).

Example:

    loss, source = resolve_loss(model)   # (SparseCategoricalCrossentropy, 'training config')
    with deterministic(seed=0):
      metrics = evaluate(clone, eval_ds, loss)   # {'loss': ..., 'accuracy': ...}
"""

import math
from typing import Any, Dict, Optional, Tuple

import tf_keras

from tfx_compression.components.pruner import training_common


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
  attributes = getattr(model, "_serialized_attributes", None) or {}
  training_config = (attributes.get("metadata") or {}).get("training_config")
  saved = (training_config or {}).get("loss")
  return training_common.resolve_loss(model, tf_keras, saved, "SavedModel",
                                      custom_objects)


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  return training_common.evaluate(tf_keras, model, dataset, loss)


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
      raise training_common.non_finite_loss(float(loss), step,
                                            self._learning_rate)


def deterministic(seed: int):
  """Seeds Python, NumPy and TensorFlow, and makes TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  return training_common.deterministic(tf_keras, seed)


def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite."""
  training_common.check_finite(((w.name, w.numpy()) for w in model.weights),
                               learning_rate)
