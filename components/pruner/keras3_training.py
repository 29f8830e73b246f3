"""Fine-tuning helpers for Keras 3 models: loss, evaluation, seeds, NaN checks.

The Keras 3 twin of ``keras2_training``; the magnitude backend
(``keras3_magnitude``) exposes them to the strategies, the search and
:func:`pruning.prune_model`. The logic is ``training_common``'s; here is what
Keras 3 keeps apart (the loss in the compile config, weight paths).

Example:

    loss, source = resolve_loss(model)   # (SparseCategoricalCrossentropy, 'compiled model')
    with deterministic(seed=0):
      metrics = evaluate(clone, eval_ds, loss)   # {'loss': ..., 'accuracy': ...}
"""

from typing import Any, Dict, Optional, Tuple

import keras

from tfx_compression.components.pruner import training_common


def resolve_loss(model, custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; the loss in its compile config (a
  ``.keras`` file loaded with ``compile=False`` keeps it when present); else a
  cross-entropy matching the output, as ``pruning.resolve_loss`` chooses it.

  Example:

      loss, source = resolve_loss(model)  # (SparseCategoricalCrossentropy, 'compiled model')
  """
  compile_config = getattr(model, "_compile_config", None)
  saved = getattr(compile_config, "config", compile_config) or {}
  saved_loss = saved.get("loss") if isinstance(saved, dict) else None
  return training_common.resolve_loss(model, keras, saved_loss, "model file",
                                      custom_objects)


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  return training_common.evaluate(keras, model, dataset, loss)


def deterministic(seed: int):
  """Seeds Python, NumPy, TensorFlow and Keras 3; TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  return training_common.deterministic(keras, seed)


def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite."""
  training_common.check_finite(
      ((w.path, keras.ops.convert_to_numpy(w)) for w in model.weights),
      learning_rate)
