"""TFX components that compress a trained Keras model and gate its deployment.

Installed as ``tfx_compression.components``; the public API is re-exported by
``tfx_compression``:

    from tfx_compression import Pruner, Quantizer, CompressionEvaluator

Importing this package puts Keras 2 (tf_keras) in force, which
tensorflow-model-optimization needs.
"""

from tfx_compression.components.common import keras_env as _keras_env

_keras_env.ensure_legacy_keras()

# pylint: disable=g-import-not-at-top,wrong-import-position
from tfx_compression.components.compression_evaluator.component import CompressionEvaluator  # noqa: E402
from tfx_compression.components.pruner.component import Pruner  # noqa: E402
from tfx_compression.components.quantizer.component import Quantizer  # noqa: E402

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator"]
