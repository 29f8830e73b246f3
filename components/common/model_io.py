"""Loading and saving models safely, in the layout TFX's Trainer writes.

Only SavedModels, ``.keras`` files and TFLite flatbuffers are read: no pickle, no
code from artifacts (Keras safe mode). Custom Keras objects must be named by the
user (``custom_objects``), never guessed.

Which Keras loads a model is read from the artifact: ``Format-Serving/model.keras``
(written by Keras 3: the one line a Keras 3 Trainer module adds, see
:data:`KERAS3_SAVE_LINE`) loads with Keras 3; a SavedModel with Keras 2 metadata
loads with tf_keras, as before.
"""

import contextlib
import os
import shutil
import tempfile
from typing import Any, Dict, Optional

from absl import logging

SERVING_DIR = "Format-Serving"
TFLITE_FILENAME = "model.tflite"
KERAS_FILENAME = "model.keras"
# What a Keras 3 Trainer module adds after writing its serving SavedModel.
KERAS3_SAVE_LINE = ('model.save(os.path.join(fn_args.serving_model_dir, '
                    '"model.keras"))')
# Children of the root object that Keras 3 layers and models (TensorFlow
# backend) carry into a SavedModel written by tf.saved_model.save.
_KERAS3_ROOT_CHILDREN = frozenset(
    ("_operations", "_build_shapes_dict", "call_signature_parameters",
     "_call_has_context_arg"))


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
  """What a model directory holds.

  'tflite'; 'keras3' (a ``model.keras`` written by Keras 3, beside or
  without a SavedModel); 'keras' (a Keras 2 SavedModel); 'saved_model_keras3'
  (a SavedModel written from a Keras 3 model, without ``model.keras``);
  'saved_model' (another SavedModel without Keras metadata) or 'unknown'.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if find_tflite(path):
    return "tflite"
  keras_file = os.path.join(path, KERAS_FILENAME)
  if tf.io.gfile.exists(keras_file) and keras_file_version(
      keras_file).startswith("3."):
    return "keras3"
  if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
    if tf.io.gfile.exists(os.path.join(path, "keras_metadata.pb")):
      return "keras"
    if _written_by_keras3(path):
      return "saved_model_keras3"
    return "saved_model"
  return "unknown"


def keras_file_version(keras_file: str) -> str:
  """The Keras version a ``.keras`` file records ('' if unreadable)."""
  import json  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    with tf.io.gfile.GFile(keras_file, "rb") as f, zipfile.ZipFile(f) as z:
      return str(json.loads(z.read("metadata.json")).get("keras_version", ""))
  except (OSError, KeyError, ValueError, zipfile.BadZipFile):
    return ""


def _written_by_keras3(path: str) -> bool:
  """True if the SavedModel's root object is a Keras 3 layer or model."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  try:
    with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
      proto.ParseFromString(f.read())
  except (OSError, ValueError, tf.errors.OpError):
    return False
  for meta_graph in proto.meta_graphs:
    nodes = meta_graph.object_graph_def.nodes
    if nodes and {c.local_name for c in nodes[0].children} & _KERAS3_ROOT_CHILDREN:
      return True
  return False


def load_keras_model(path: str, parameter: str = "model",
                     custom_objects: Optional[Dict[str, Any]] = None):
  """Loads a Keras 3 or tf_keras model from a serving directory, with clear errors.

  ``<path>/model.keras`` written by Keras 3 loads with Keras 3
  (``keras.saving.load_model``, safe mode); otherwise a Keras 2 SavedModel
  loads with tf_keras.

  Args:
    path: the serving directory (e.g. ``<model uri>/Format-Serving``).
    parameter: the input's name, used in error messages.
    custom_objects: custom layers/functions the user declared.

  Returns:
    The Keras 3 or tf_keras model (``keras_env.keras_version_of`` tells
    which). It is a new object: changing it never touches the disk.

  Raises:
    ModelLoadError: the directory is missing, TFLite, not a Keras model, or
      corrupt; a Keras 3 SavedModel without ``model.keras`` (the message
      quotes :data:`KERAS3_SAVE_LINE`); or it has custom layers whose classes
      ``custom_objects`` does not give (they are never guessed or rebuilt
      from the artifact).
  """
  kind = model_kind(path)
  if kind == "keras3":
    return _load_keras3(os.path.join(path, KERAS_FILENAME), parameter,
                        custom_objects)
  import tf_keras  # pylint: disable=g-import-not-at-top
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
  if kind == "saved_model_keras3":
    raise ModelLoadError(
        f"`{parameter}` at {path} is a SavedModel written from a Keras 3 model "
        f"without {KERAS_FILENAME} beside it, so the Keras model cannot be "
        "rebuilt: in the Trainer module's run_fn, after it writes the "
        f"SavedModel, add the line `{KERAS3_SAVE_LINE}`.")
  if kind == "saved_model":
    raise ModelLoadError(
        f"`{parameter}` at {path} is a SavedModel without Keras metadata "
        "(written by tf.saved_model.save, or an Estimator), which cannot be "
        "loaded as a Keras model to fine-tune, convert or measure. In the "
        "Trainer module, save with "
        "model.save(serving_model_dir, save_format='tf', signatures=...) "
        "(tf_keras), or with Keras 3 add "
        f"`{KERAS3_SAVE_LINE}` after writing the SavedModel.")
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


def _load_keras3(keras_file: str, parameter: str,
                 custom_objects: Optional[Dict[str, Any]]):
  """Loads a Keras 3 ``.keras`` file in safe mode (no lambda from the file runs)."""
  import keras  # pylint: disable=g-import-not-at-top
  try:
    model = keras.saving.load_model(keras_file, custom_objects=custom_objects,
                                    compile=False, safe_mode=True)
  except (ValueError, TypeError, KeyError, OSError) as e:
    text = " ".join(str(e).split())[:400]
    raise ModelLoadError(
        f"`{parameter}` at {keras_file} could not be loaded as a Keras 3 "
        f"model: {type(e).__name__}: {text}. Loading never runs code from a "
        "model artifact: if it uses custom layers or functions, define "
        "`custom_objects` in the component's `module_file`; if the file is "
        "damaged, re-run the step that wrote it.") from e
  except Exception as e:  # pylint: disable=broad-except
    raise ModelLoadError(
        f"`{parameter}` at {keras_file} is corrupt or unreadable: "
        f"{type(e).__name__}: {str(e)[:300]}. Re-run the step that wrote it.") from e
  if not isinstance(model, keras.Model):
    raise ModelLoadError(f"`{parameter}` at {keras_file} loaded as "
                         f"{type(model).__name__}, not a Keras Model.")
  logging.info("Loaded the Keras 3 model %s from %s.", model.name, keras_file)
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
  """The serving signatures a loaded Keras 2 SavedModel carried, by name.

  A Keras 3 model loaded from ``model.keras`` has none: its SavedModel's
  signatures are read with ``tf.saved_model.load`` (see ``keras3_export``).
  """
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
