"""TFX components that compress a trained Keras model and gate its deployment.

Importing this package puts Keras 2 (tf_keras) in force, which
tensorflow-model-optimization needs:

    from components import Pruner, Quantizer, CompressionEvaluator
"""

from components.common import keras_env as _keras_env

_keras_env.ensure_legacy_keras()

# pylint: disable=g-import-not-at-top,wrong-import-position
from components.compression_evaluator.component import CompressionEvaluator  # noqa: E402
from components.pruner.component import Pruner  # noqa: E402
from components.quantizer.component import Quantizer  # noqa: E402

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator"]
