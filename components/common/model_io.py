"""Loading and saving models safely, in the layout TFX's Trainer writes.

Only SavedModels and TFLite flatbuffers are read: no pickle, no code from artifacts.
Custom Keras objects must be named by the user (``custom_objects``), never guessed.
"""

import contextlib
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from absl import logging

SERVING_DIR = "Format-Serving"
TFLITE_FILENAME = "model.tflite"


class ModelLoadError(ValueError):
  """The model artifact is not something this component can take."""


def serving_dir(model_uri: str) -> str:
  """The serving model directory of a Model artifact URI (TFX's layout)."""
  candidate = os.path.join(model_uri, SERVING_DIR)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.io.gfile.isdir(candidate):
    return candidate
  return model_uri


def find_tflite(path: str) -> Optional[str]:
  """Path of the TFLite flatbuffer under ``path``, or None."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
    return path if path.endswith(".tflite") else None
  for name in (TFLITE_FILENAME, "tflite"):
    p = os.path.join(path, name)
    if tf.io.gfile.exists(p):
      return p
  return None


def model_kind(path: str) -> str:
  """'tflite', 'keras' (Keras SavedModel), 'saved_model' (no Keras metadata) or 'unknown'."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if find_tflite(path):
    return "tflite"
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    if tf.io.gfile.exists(os.path.join(path, "keras_metadata.pb")):
      return "keras"
    return "saved_model"
  return "unknown"


def load_keras_model(path: str, parameter: str = "model",
                     custom_objects: Optional[Dict[str, Any]] = None):
  """Loads a tf_keras model from a SavedModel directory, with clear errors.

  Args:
    path: the SavedModel directory (e.g. ``<model uri>/Format-Serving``).
    parameter: the input's name, used in error messages.
    custom_objects: custom layers/functions the user declared.

  Returns:
    The tf_keras model. It is a new object: changing it never touches the disk.

  Raises:
    ModelLoadError: the directory is missing, TFLite, not a Keras SavedModel,
      or corrupt; or it has custom layers whose classes ``custom_objects``
      does not give (they are never guessed or rebuilt from the artifact).
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  kind = model_kind(path)
  if kind == "tflite":
    raise ModelLoadError(
        f"`{parameter}` at {path} is already a TFLite model "
        f"({find_tflite(path)}); this step needs the Keras SavedModel it came "
        "from. Wire the Trainer's or the Pruner's model here instead.")
  if kind == "unknown":
    raise ModelLoadError(
        f"`{parameter}` at {path} holds no saved_model.pb: it is not a "
        "SavedModel (is the upstream step's output empty or a different "
        "format?). Wire a Trainer's or Pruner's model.")
  if kind == "saved_model":
    raise ModelLoadError(
        f"`{parameter}` at {path} is a SavedModel without Keras metadata "
        "(written by tf.saved_model.save, or an Estimator), which cannot be "
        "loaded as a Keras model to fine-tune, convert or measure. In the "
        "Trainer module, save with "
        "model.save(serving_model_dir, save_format='tf', signatures=...) "
        "so the model stays loadable as Keras.")
  try:
    # Safe mode also for the SavedModel loader, which otherwise rebuilds a
    # Lambda layer's Python lambda from bytecode stored in the artifact (code
    # from the artifact would run). In safe mode such a layer is revived from
    # its saved graph instead, and refused below.
    with _safe_mode():
      model = tf_keras.models.load_model(path, custom_objects=custom_objects,
                                         compile=False)
  except (ValueError, TypeError, KeyError, OSError) as e:
    raise ModelLoadError(
        f"`{parameter}` at {path} could not be loaded as a tf_keras model: "
        f"{type(e).__name__}: {e}. If it uses custom layers, define "
        "`custom_objects` in the component's `module_file`; if the directory "
        "is damaged, re-run the step that wrote it.") from e
  except Exception as e:  # pylint: disable=broad-except
    # TensorFlow raises its own errors (e.g. DataLossError) for corrupt files.
    raise ModelLoadError(
        f"`{parameter}` at {path} is corrupt or unreadable: "
        f"{type(e).__name__}: {str(e)[:300]}. Re-run the step that wrote it.") from e
  if not isinstance(model, tf_keras.Model):
    raise ModelLoadError(f"`{parameter}` at {path} loaded as "
                         f"{type(model).__name__}, not a tf_keras Model.")
  _check_no_revived_layers(model, path, parameter)
  return model


def _safe_mode():
  """tf_keras's safe-mode scope (not exported publicly in tf_keras 2.16)."""
  from tf_keras.src.saving import serialization_lib  # pylint: disable=g-import-not-at-top
  return serialization_lib.SafeModeScope(True)


def _revived_layers(model) -> list:
  """Layers of the model's graph that Keras revived without their Python class.

  A SavedModel layer whose class was not given (custom_objects) comes back as
  a "revived" layer that replays the saved graph: it predicts, but clones into
  a different layer (its constructor arguments and weights are lost), so
  fine-tuning and conversion would silently change the model. Layers that are
  only attributes of the model (e.g. TFX's ``model.tft_layer``, used by the
  serving signature, not by the model's graph) have no inbound node and are
  left alone.
  """
  from tf_keras.src.saving.legacy.saved_model import load as legacy_load  # pylint: disable=g-import-not-at-top
  found = []
  if isinstance(model, legacy_load.RevivedLayer):
    found.append(model)
  for layer in getattr(model, "layers", []):
    if isinstance(layer, legacy_load.RevivedLayer) and layer._inbound_nodes:  # pylint: disable=protected-access
      found.append(layer)
    elif not isinstance(layer, legacy_load.RevivedLayer) and hasattr(
        layer, "layers"):
      found.extend(_revived_layers(layer))
  return found


def _check_no_revived_layers(model, path: str, parameter: str) -> None:
  revived = _revived_layers(model)
  if not revived:
    return
  names = [f"{l.name} ({type(l).__name__})" for l in revived]
  classes = sorted({type(l).__name__ for l in revived})
  example = ", ".join(f"'{c}': {c}" for c in classes)
  lam = (" A Lambda layer holding a Python lambda is never rebuilt from the "
         "artifact (that would run code stored in the model): in the Trainer, "
         "replace the lambda by a named function or a layer class and list it "
         "in custom_objects." if "Lambda" in classes else "")
  raise ModelLoadError(
      f"`{parameter}` at {path} has layers whose Python classes were not "
      f"given: {names}. Loading never runs code from a model artifact, so "
      "custom layers must be named by you: define "
      f"`custom_objects = {{{example}}}` in a Python file and pass it as the "
      f"component's `module_file`.{lam}")


def serving_signatures(model) -> Dict[str, Any]:
  """The serving signatures a loaded Keras SavedModel carried, by name."""
  sigs = getattr(model, "signatures", None)
  return dict(sigs) if sigs else {}


@contextlib.contextmanager
def staged_output(final_dir: str):
  """Yields a local temporary directory; copies it to ``final_dir`` on success.

  Nothing is written to ``final_dir`` unless the block completes, so a failed or
  killed step never leaves a partial model that looks finished. The copy works
  for remote URIs (gs://) too.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tmp = tempfile.mkdtemp(prefix="compression-stage-")
  try:
    yield tmp
    if tf.io.gfile.exists(final_dir):
      tf.io.gfile.rmtree(final_dir)
    if "://" in final_dir:
      _copy_tree(tmp, final_dir)
    else:
      os.makedirs(os.path.dirname(final_dir) or ".", exist_ok=True)
      partial = final_dir + ".partial"
      if os.path.exists(partial):
        shutil.rmtree(partial)
      shutil.copytree(tmp, partial)
      os.replace(partial, final_dir)
    logging.info("Wrote %s", final_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _copy_tree(src: str, dst: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for root, _, files in os.walk(src):
    rel = os.path.relpath(root, src)
    target = dst if rel == "." else os.path.join(dst, rel)
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(root, name), os.path.join(target, name),
                       overwrite=True)
