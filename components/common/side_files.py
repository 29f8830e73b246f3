"""The JSON files a step writes beside its model, named and read in one place.

* ``pruning_search.json``, at the root of the Pruner's Model artifact (search
  mode only): the search curve, one step per sparsity tried. It stays there:
  the Quantizer records its input model's URI on its output as the custom
  property ``source_model`` (:data:`SOURCE_MODEL_PROPERTY`), and the
  CompressionEvaluator follows that lineage back to the Pruner's artifact
  (:func:`read_pruning_search` with ``source_uri``) to draw the curve.
* ``tflite_io.json``, beside the Quantizer's ``model.tflite``
  (``Format-Serving/``): the TFLite model's inputs and outputs and how a device
  packs them.
* ``plan.json``, at the root of the CompressionPlanner's Model artifact: every
  candidate of the plan search (structure, sparsity, mode, metric, sizes,
  latency, passed or why not), the baseline's figures and the chosen index.
  The CompressionEvaluator draws its Pareto front.

Readers return None when the file is not there (the step that writes it did
not run in that mode) and raise :class:`SideFileError` when it is there but is
not JSON.

Example:

    curve = side_files.read_pruning_search(candidate.uri, source_uri)  # None if absent
"""

import json
import os
from typing import Any, Dict, Optional, Sequence

from tfx_compression.components.common import model_io

PRUNING_SEARCH = "pruning_search.json"
TFLITE_IO = "tflite_io.json"
PLAN = "plan.json"
# The custom property (a URI) by which a Model artifact made from another model
# names it: the Quantizer's output names the Pruner's (or the Trainer's) model.
SOURCE_MODEL_PROPERTY = "source_model"


class SideFileError(ValueError):
  """A side file exists but cannot be read as JSON."""


def read_json(paths: Sequence[str]) -> Optional[Dict[str, Any]]:
  """The first of ``paths`` that exists, parsed; None if none does."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for path in paths:
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        try:
          return json.load(f)
        except json.JSONDecodeError as e:
          raise SideFileError(
              f"{path} is not valid JSON ({e}); re-run the step that wrote "
              "it.") from e
  return None


def pruning_search_paths(model_uri: str) -> Sequence[str]:
  """Where a Model artifact may hold the search curve (root, then serving dir)."""
  return (os.path.join(model_uri, PRUNING_SEARCH),
          os.path.join(model_uri, model_io.SERVING_DIR, PRUNING_SEARCH))


def read_pruning_search(model_uri: str, source_uri: Optional[str] = None
                        ) -> Optional[Dict[str, Any]]:
  """The search curve of a Model artifact's lineage, or None.

  The artifact's own curve (a Pruner's output, or an older Quantizer output
  that carried a copy), else that of its source model (``source_uri``, the
  artifact's :data:`SOURCE_MODEL_PROPERTY`: a Quantizer's output names the
  Pruner's). Any filesystem ``tf.io.gfile`` reads (local, gs://).
  """
  curve = read_json(pruning_search_paths(model_uri))
  if curve is None and source_uri:
    curve = read_json(pruning_search_paths(source_uri))
  return curve


def write_pruning_search(model_dir: str, curve: Any) -> None:
  """Writes the curve at the root of a Model artifact's directory."""
  _write_json(os.path.join(model_dir, PRUNING_SEARCH), curve)


def read_plan(model_uri: str) -> Optional[Dict[str, Any]]:
  """The plan a CompressionPlanner output carries at its root, or None."""
  return read_json([os.path.join(model_uri, PLAN)])


def write_plan(model_dir: str, plan: Any) -> None:
  """Writes the plan at the root of a Model artifact's directory (outside
  Format-Serving, which the Pusher pushes)."""
  _write_json(os.path.join(model_dir, PLAN), plan)


def tflite_io_path(tflite_path: str) -> str:
  """The tflite_io.json beside a ``.tflite`` file."""
  return os.path.join(os.path.dirname(tflite_path), TFLITE_IO)


def read_tflite_io(tflite_path: str) -> Optional[Dict[str, Any]]:
  """The tflite_io.json beside a ``.tflite`` file, or None."""
  return read_json([tflite_io_path(tflite_path)])


def write_tflite_io(serving_dir: str, io: Any) -> None:
  """Writes tflite_io.json in the directory that holds ``model.tflite``."""
  _write_json(os.path.join(serving_dir, TFLITE_IO), io)


def _write_json(path: str, payload: Any) -> None:
  # Lazily: artifacts imports TFX, which readers (summary, benchmarks) need not.
  from tfx_compression.components.common import artifacts  # pylint: disable=g-import-not-at-top
  artifacts.write_json(path, payload)
