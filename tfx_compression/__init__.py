"""TFX components that prune, quantize and gate a trained Keras model.

    from tfx_compression import Pruner, Quantizer, CompressionEvaluator, add_compression

The repository keeps its code in the top-level folders ``components/`` and
``pipelines/``; they are installed as ``tfx_compression.components`` and
``tfx_compression.pipelines`` (see ``pyproject.toml``), so nothing of ours takes
the names a TFX project gives its own folders.
"""

# pylint: disable=g-import-not-at-top
from tfx_compression.components import CompressionEvaluator, Pruner, Quantizer
from tfx_compression.pipelines.compression import add_compression

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator", "add_compression"]
