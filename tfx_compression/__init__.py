"""TFX components that prune, quantize and gate a trained Keras model.

    from tfx_compression import Pruner, Quantizer, CompressionEvaluator, add_compression
    from tfx_compression import CompressionPlanner   # searches a compression plan

The repository keeps its code in the top-level folders ``components/`` and
``pipelines/``; they are installed as ``tfx_compression.components`` and
``tfx_compression.pipelines`` (see ``pyproject.toml``), so nothing of ours takes
the names a TFX project gives its own folders.

The names are imported on first use (PEP 562): ``python -m
tfx_compression.pipelines.local_runner`` parses its flags, and sends TensorFlow's
start-up output to its log file, before TensorFlow is imported.
"""

import importlib

_EXPORTS = {
    "Pruner": "tfx_compression.components",
    "Quantizer": "tfx_compression.components",
    "CompressionEvaluator": "tfx_compression.components",
    "CompressionPlanner": "tfx_compression.components",
    "add_compression": "tfx_compression.pipelines.compression",
}

__all__ = ["Pruner", "Quantizer", "CompressionEvaluator", "CompressionPlanner",
           "add_compression"]


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  if name in ("components", "pipelines"):
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
