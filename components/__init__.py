"""TFX components that compress a trained Keras model and gate its deployment.

Installed as ``tfx_compression.components``; the public API is re-exported by
``tfx_compression``:

    from tfx_compression import Pruner, Quantizer, CompressionEvaluator, CompressionPlanner

Importing this package does not choose the user's Keras: ``tf.keras`` is what
``TF_USE_LEGACY_KERAS`` says (see ``common/keras_env.py``).
"""

from tfx_compression.components.common import keras_env as _keras_env

# tensorflow-transform and tensorflow-model-optimization set TF_USE_LEGACY_KERAS=1
# when imported; this keeps the user's choice.
with _keras_env.user_keras_unchanged():
  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.compression_evaluator.component import CompressionEvaluator
  from tfx_compression.components.compression_planner.component import CompressionPlanner
  from tfx_compression.components.pruner.component import Pruner
  from tfx_compression.components.quantizer.component import Quantizer

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator", "CompressionPlanner"]
