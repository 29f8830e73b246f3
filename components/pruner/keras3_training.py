"""Fine-tuning helpers for Keras 3 models: loss, evaluation, seeds, NaN checks.

The Keras 3 twin of ``keras2_training``; the magnitude backend
(``keras3_magnitude``) exposes them to the strategies, the search and
:func:`pruning.prune_model`.

Example:

    loss, source = resolve_loss(model)   # (SparseCategoricalCrossentropy, 'compiled model')
    with deterministic(seed=0):
      metrics = evaluate(clone, eval_ds, loss)   # {'loss': ..., 'accuracy': ...}
"""

import contextlib
from typing import Any, Dict, Optional, Tuple

from absl import logging
import keras
import numpy as np

from tfx_compression.components.pruner import strategy
from tfx_compression.components.pruner.strategy import NonFiniteLossError


# Loss and evaluation.


def _deserialize_loss(cfg, custom_objects):
  if cfg is None:
    return None
  if isinstance(cfg, str):
    return keras.losses.get(cfg)
  if isinstance(cfg, dict) and "class_name" in cfg:
    return keras.losses.deserialize(cfg, custom_objects=custom_objects)
  if isinstance(cfg, dict):
    return {k: _deserialize_loss(v, custom_objects) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [_deserialize_loss(v, custom_objects) for v in cfg]
  return cfg if isinstance(cfg, keras.losses.Loss) or callable(cfg) else None


def resolve_loss(model, custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; the loss in its compile config (a
  ``.keras`` file loaded with ``compile=False`` keeps it when present); else a
  cross-entropy matching the output, as ``pruning.resolve_loss`` chooses it.

  Example:

      loss, source = resolve_loss(model)  # (SparseCategoricalCrossentropy, 'compiled model')
  """
  if getattr(model, "loss", None) is not None and getattr(
      model, "optimizer", None) is not None:
    return model.loss, "compiled model"
  compile_config = getattr(model, "_compile_config", None)
  saved = getattr(compile_config, "config", compile_config) or {}
  if isinstance(saved, dict) and saved.get("loss") is not None:
    try:
      loss = _deserialize_loss(saved["loss"], custom_objects)
      if loss is not None:
        return loss, "training config"
    except (ValueError, TypeError) as e:
      logging.warning("The saved loss could not be rebuilt (%s); using the "
                      "default cross-entropy. Declare custom losses in the "
                      "module_file's custom_objects.", e)
  return strategy.default_loss(model, keras.losses, "model file")


def _accuracy_metric(model, loss):
  name = (loss if isinstance(loss, str) else type(loss).__name__).lower()
  from_logits = bool(getattr(loss, "get_config", lambda: {})().get(
      "from_logits", False))
  if "binary" in name or (len(model.outputs) == 1
                          and model.outputs[0].shape[-1] == 1):
    return keras.metrics.BinaryAccuracy(
        name="accuracy", threshold=0.0 if from_logits else 0.5)
  if name.startswith("categorical"):
    return keras.metrics.CategoricalAccuracy(name="accuracy")
  return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  model.compile(loss=loss, metrics=[_accuracy_metric(model, loss)])
  values = model.evaluate(dataset, verbose=0, return_dict=True)
  return {k: float(v) for k, v in values.items()}


@contextlib.contextmanager
def deterministic(seed: int):
  """Seeds Python, NumPy, TensorFlow and Keras 3; TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  keras.utils.set_random_seed(seed)
  if keras.backend.backend() != "tensorflow":
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

def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite."""
  bad = [w.path for w in model.weights
         if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
  if bad:
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    raise NonFiniteLossError(
        f"Fine-tuning left NaN or infinite weights in {bad}; no model was "
        f"written. Lower `learning_rate`{lr}, check the train split for NaN or "
        "infinite feature values, or check the model's loss.")
