"""Puts Keras 2 (tf_keras) in force before TensorFlow is imported.

tensorflow-model-optimization 0.8 only works with Keras 2. In TensorFlow 2.16,
``tf.keras`` is Keras 3 unless ``TF_USE_LEGACY_KERAS=1`` is set before ``tf.keras``
is first resolved, so this module must run before anything touches ``tf.keras``.
"""

import os
import sys

_ENV = "TF_USE_LEGACY_KERAS"


def ensure_legacy_keras() -> None:
  """Sets TF_USE_LEGACY_KERAS=1, and fails clearly if Keras 3 is already in use.

  Raises:
    ImportError: ``TF_USE_LEGACY_KERAS`` is set to another value, or ``tf.keras``
      already resolved to Keras 3 in this process.
  """
  value = os.environ.get(_ENV)
  if value is None:
    os.environ[_ENV] = "1"
  elif value.strip().lower() not in ("1", "true"):
    raise ImportError(
        f"{_ENV}={value!r} is set, but these components need Keras 2 "
        f"(tf_keras) for tensorflow-model-optimization. Unset it or set "
        f"{_ENV}=1 before starting Python.")
  tf = sys.modules.get("tensorflow")
  if tf is None:
    return
  # TensorFlow was imported first: tf.keras is resolved lazily, so it is still
  # fine unless something already resolved it to Keras 3.
  keras_module = getattr(tf, "keras", None)
  version = getattr(keras_module, "__version__", "")
  if version.startswith("3."):
    raise ImportError(
        "tf.keras already resolved to Keras 3 in this process (Keras "
        f"{version}); these components need Keras 2 (tf_keras). Import "
        "`tfx_compression` before TensorFlow, or set TF_USE_LEGACY_KERAS=1 in the "
        "environment before starting Python.")
