"""The TFLite runtime every component and benchmark runs models in.

Google ships the TFLite interpreter as LiteRT (the ``ai-edge-litert`` package,
``ai_edge_litert.interpreter``); TensorFlow 2.20+ warns on every use of its own
``tf.lite.Interpreter`` that it is deprecated in favour of it. Both take the same
arguments and give the same results, so one function picks LiteRT when it is
installed and TensorFlow's interpreter otherwise, and one names the choice (the
evaluation report records it).

Example:

    interpreter = tflite_runtime.make_interpreter(model_content=flatbuffer,
                                                  num_threads=1)
    tflite_runtime.runtime_name()   # 'ai_edge_litert 2.3.0' or 'tf.lite 2.16.2'
"""

import importlib
from typing import Any, Optional, Tuple

from absl import logging

LITERT = "ai_edge_litert"
TF_LITE = "tf.lite"

_resolved: Optional[Tuple[str, str, Any]] = None


def _resolve() -> Tuple[str, str, Any]:
  """(runtime, version, Interpreter class), looked up once per process."""
  global _resolved
  if _resolved is None:
    try:
      module = importlib.import_module("ai_edge_litert.interpreter")
      from importlib import metadata  # pylint: disable=g-import-not-at-top
      try:
        version = metadata.version("ai-edge-litert")
      except metadata.PackageNotFoundError:
        version = "unknown"
      _resolved = (LITERT, version, module.Interpreter)
    except ImportError:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      _resolved = (TF_LITE, tf.__version__, tf.lite.Interpreter)
    logging.info("TFLite runtime: %s %s", _resolved[0], _resolved[1])
  return _resolved


def reset() -> None:
  """Forgets the choice, so the next call looks again (tests swap modules)."""
  global _resolved
  _resolved = None


def make_interpreter(**kwargs) -> Any:
  """A TFLite interpreter from the chosen runtime, built with ``kwargs``.

  Args:
    **kwargs: what ``tf.lite.Interpreter`` takes: ``model_content`` or
      ``model_path``, ``num_threads``, ...

  Returns:
    An ``ai_edge_litert.interpreter.Interpreter`` when ai-edge-litert is
    installed, else a ``tf.lite.Interpreter``; tensors are not yet allocated.
  """
  return _resolve()[2](**kwargs)


def runtime_name() -> str:
  """The runtime interpreters run in, with its version: 'ai_edge_litert 2.3.0'."""
  runtime, version, _ = _resolve()
  return f"{runtime} {version}"
