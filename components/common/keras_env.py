"""Which Keras a model is; importing this package decides nothing for the user.

TensorFlow 2.16 resolves ``tf.keras`` once, on first use: Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set by then. The user's code decides which Keras it
gets (``from tensorflow import keras``, ``import keras`` or ``import tf_keras``);
this package never sets the variable and never reads ``tf.keras``. Its Keras 2
code imports ``tf_keras``, its Keras 3 code imports ``keras``.

tensorflow-model-optimization (Keras 2 only) sets ``TF_USE_LEGACY_KERAS=1`` when
imported, which would switch a ``tf.keras`` not yet resolved to Keras 2:
:func:`import_tfmot` imports it only when a Keras 2 model needs it, after
``tf.keras`` was resolved as the environment said, and puts the variable back.
"""

import contextlib
import os
from typing import Any

ENV = "TF_USE_LEGACY_KERAS"
KERAS_2 = 2
KERAS_3 = 3


def keras_version_of(model: Any) -> int:
  """2 for a tf_keras (Keras 2) model, 3 for a Keras 3 model.

  Example:

      if keras_version_of(model) == KERAS_3: ...

  Raises:
    TypeError: ``model`` is neither (e.g. a TFLite flatbuffer or a
      ``tf.saved_model.load`` object).
  """
  import keras  # pylint: disable=g-import-not-at-top
  if isinstance(model, keras.Model):
    return KERAS_3
  import tf_keras  # pylint: disable=g-import-not-at-top
  if isinstance(model, tf_keras.Model):
    return KERAS_2
  raise TypeError(
      f"`model` must be a Keras model (Keras 3 `keras.Model` or Keras 2 "
      f"`tf_keras.Model`), got {type(model).__module__}.{type(model).__name__}.")


def is_keras3(model: Any) -> bool:
  """True for a Keras 3 model (False for tf_keras models and anything else)."""
  import keras  # pylint: disable=g-import-not-at-top
  return isinstance(model, keras.Model)


@contextlib.contextmanager
def user_keras_unchanged():
  """Runs a block of imports without changing which Keras the user's code gets.

  ``tf.keras`` is resolved first, as ``TF_USE_LEGACY_KERAS`` says now (as
  ``import tfx`` does anyway), so libraries imported in the block that set the
  variable (tensorflow-transform, tensorflow-model-optimization) cannot switch
  it; the variable is then put back as it was, so code run later in the
  process, or in processes it starts, is not affected either.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  before = os.environ.get(ENV)
  getattr(tf.keras, "version", None)  # resolves tf.keras now
  try:
    yield
  finally:
    if before is None:
      os.environ.pop(ENV, None)
    else:
      os.environ[ENV] = before


def import_tfmot():
  """Imports tensorflow_model_optimization without choosing the user's Keras.

  See :func:`user_keras_unchanged`. tfmot itself works on tf_keras whichever
  Keras ``tf.keras`` is.

  Example:

      tfmot = keras_env.import_tfmot()
      tfmot.sparsity.keras.prune_low_magnitude(...)
  """
  with user_keras_unchanged():
    import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  return tfmot
