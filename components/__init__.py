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

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator", "add_compression"]


def __getattr__(name):
  # add_compression lives with the pipelines and imports the components: load it
  # on first use to keep the import graph acyclic.
  if name == "add_compression":
    from pipelines.compression import add_compression  # pylint: disable=g-import-not-at-top
    return add_compression
  raise AttributeError(f"module 'components' has no attribute {name!r}")
