"""Writing a changed Keras 3 model in the layout the Trainer wrote it.

A Keras 3 Trainer module writes ``Format-Serving/`` as a SavedModel (its own serving
signatures: serialized tf.Examples in, ``transform_features`` kept) plus
``Format-Serving/model.keras``. :func:`export_keras3` writes the same for a model
derived from it (pruned, fine-tuned), so the Quantizer, another Pruner, the stock
Evaluator, TF Serving or a person can continue from it:

- weights of the same shapes (unstructured, M:N): the Trainer's SavedModel is
  loaded with ``tf.saved_model.load``, the new values are assigned to its variables
  (matched by variable name and shape) and it is saved again with its own
  signatures, which are therefore exactly the Trainer's;
- other shapes (channels): each signature that reads the model's weights is
  re-created for the new model following the TFX pattern (serialized tf.Examples ->
  ``tf.io.parse_example`` -> the Transform layer -> model -> outputs by name);
  signatures that read none (``transform_features``) are kept as they are.

Either way the written SavedModel is loaded back and every signature must keep its
name, input and output specs; otherwise :class:`Keras3ExportError` names it.

Example:

    info = export_keras3(pruned, "/trainer/Format-Serving", "/out/Format-Serving",
                         sample_serialized_examples=examples, label_key="species",
                         transform_output_dir="/transform_graph")
"""

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tfx_compression.components.common import model_io
from tfx_compression.components.common import signatures as signatures_lib

# ({input: (shape, dtype)}, {output: (shape, dtype)}) of a signature, as the
# tf_keras export compares them.
signature_specs = signatures_lib.signature_specs

# Children of a restored Keras 3 model that are Keras internals, not objects
# the Trainer module attached (such as TFX's ``tft_layer``).
_KERAS3_INTERNALS = frozenset((
    "_operations", "_tracked", "_inbound_nodes", "_outbound_nodes", "_losses",
    "_losses_override", "call_signature_parameters", "_call_has_context_arg",
    "_build_shapes_dict", "output_names", "signatures", "_default_save_signature",
    "_layers", "_functional", "_variables", "_seed_generators", "_metrics"))


class Keras3ExportError(ValueError):
  """The model cannot be written with the Trainer's serving signatures."""


def _variables(obj, prefix: str = "", out=None, seen=None
               ) -> Dict[str, tf.Variable]:
  """Trackable path -> tf.Variable under ``obj`` (a restored SavedModel object)."""
  out = {} if out is None else out
  seen = set() if seen is None else seen
  if id(obj) in seen:
    return out
  seen.add(id(obj))
  if isinstance(obj, tf.Variable):
    out[prefix] = obj
    return out
  children = getattr(obj, "_trackable_children", None)
  if children is None:
    return out
  try:
    items = children(save_type="savedmodel")
  except (TypeError, ValueError, AttributeError):
    return out
  for name, child in sorted(items.items()):
    _variables(child, f"{prefix}/{name}", out, seen)
  return out


def _model_variables(loaded) -> Dict[str, tf.Variable]:
  """Trackable path -> restored variable of the model itself.

  Variables under objects the Trainer module attached (``tft_layer``) or under
  the optimizer are left out.
  """
  return {path: var for path, var in _variables(loaded).items()
          if path.split("/")[1] in _KERAS3_INTERNALS}


def _keras_variable_paths(model) -> Dict[int, str]:
  """id(Keras variable) -> its trackable path in ``model``.

  The same walk as :func:`_variables`, so a model with the structure of the
  one the SavedModel was written from (loaded from its model.keras, or a
  clone) gives the same paths.
  """
  import keras  # pylint: disable=g-import-not-at-top
  out: Dict[int, str] = {}
  seen = set()

  def walk(obj, prefix):
    if id(obj) in seen:
      return
    seen.add(id(obj))
    if isinstance(obj, (keras.Variable, tf.Variable)):
      out.setdefault(id(obj), prefix)
      return
    children = getattr(obj, "_trackable_children", None)
    if children is None:
      return
    try:
      items = children(save_type="savedmodel")
    except (TypeError, ValueError, AttributeError):
      return
    for name, child in sorted(items.items()):
      walk(child, f"{prefix}/{name}")

  walk(model, "")
  return out


def _same_shape_plan(model, restored: Mapping[str, tf.Variable]
                     ) -> Tuple[Optional[List[Tuple[tf.Variable, Any]]], str]:
  """(restored variable, new weight) pairs, or (None, why not).

  Each weight is matched by its trackable path, else by its name (Keras 3
  names the tf.Variable after ``weight.path``, a Sequential model with its
  own name in front).
  """
  paths = _keras_variable_paths(model)
  by_name: Dict[str, List[tf.Variable]] = {}
  for var in restored.values():
    by_name.setdefault(var.name.split(":")[0], []).append(var)
  plan, used = [], set()
  for w in model.weights:
    var = restored.get(paths.get(id(w), ""))
    if var is None or tuple(var.shape) != tuple(w.shape):
      candidates = [v for n, vs in by_name.items() for v in vs
                    if (n == w.path or n.endswith("/" + w.path))
                    and tuple(v.shape) == tuple(w.shape)]
      var = candidates[0] if len(candidates) == 1 else None
    if var is None:
      return None, (f"weight {w.path!r} {tuple(w.shape)} has no variable of "
                    "that shape in the SavedModel")
    if id(var) in used:
      return None, f"two weights map onto the SavedModel's {var.name!r}"
    used.add(id(var))
    plan.append((var, w))
  if len(plan) != len(restored):
    return None, (f"the model has {len(plan)} weights, the SavedModel "
                  f"{len(restored)}")
  return plan, ""


def _reads(fn, variables: Mapping[str, tf.Variable]) -> bool:
  handles = {id(v.handle) for v in variables.values()}
  ids = {id(v) for v in variables.values()}
  for v in getattr(fn, "variables", ()) or ():
    if id(v) in ids or id(getattr(v, "handle", None)) in handles:
      return True
  for t in getattr(fn, "captured_inputs", ()) or ():
    if id(t) in handles:
      return True
  return False


def _feed(model, features: Mapping[str, tf.Tensor]):
  names = [t.name.split(":")[0] for t in model.inputs]
  missing = [n for n in names if n not in features]
  if missing:
    raise Keras3ExportError(f"the model's inputs {missing} are not among the "
                            f"features {sorted(features)}")
  structure = getattr(model, "_inputs_struct", None)  # None: Sequential
  if isinstance(structure, Mapping):
    return {k: features[k] for k in structure}
  if isinstance(structure, (list, tuple)):
    return [features[n] for n in names]
  return features[names[0]]


def _recreated(model, fn, tft_layer, parse_spec, label_key):
  """The signature ``fn`` re-created as a tf.function over ``model``."""
  keys = sorted(fn.structured_outputs)
  inputs = signatures_lib.input_specs(fn)
  model_inputs = [t.name.split(":")[0] for t in model.inputs]

  def outputs_for(features):
    features = dict(features)
    if tft_layer is not None and not all(n in features for n in model_inputs):
      features = dict(tft_layer(features))
      features.pop(label_key, None)
    return signatures_lib.map_outputs(
        model, model(_feed(model, features), training=False), keys,
        Keras3ExportError)

  specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in inputs]
  if parse_spec is not None:
    def serve(examples):
      return outputs_for(tf.io.parse_example(examples, parse_spec))
  else:
    names = [n for n, _ in inputs]

    def serve(*tensors):
      return outputs_for(dict(zip(names, tensors)))
  return tf.function(serve, input_signature=specs).get_concrete_function()


def _parse_spec(fn, label_key: Optional[str]) -> Dict[str, Any]:
  try:
    spec = dict(signatures_lib.infer_raw_feature_spec(fn))
  except signatures_lib.SignatureExportError as e:
    raise Keras3ExportError(f"its feature spec cannot be read ({e})") from e
  spec.pop(label_key, None)
  return spec


def _regenerated_module(model, loaded, originals, model_vars,
                        label_key: Optional[str],
                        transform_output_dir: Optional[str]):
  """(tf.Module to save, signatures) with the weight-reading ones re-created."""
  module = tf.Module()
  module.model = model
  # Objects the Trainer module attached to its model (TFX's tft_layer): the
  # kept signatures capture their resources, which must be saved too.
  for name, child in loaded._trackable_children(save_type="savedmodel").items():  # pylint: disable=protected-access
    if name not in _KERAS3_INTERNALS and not callable(getattr(child, "numpy", None)):
      setattr(module, f"kept_{name}", child)
  tft_layer = None
  if transform_output_dir:
    import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
    tft_layer = tft.TFTransformOutput(transform_output_dir
                                      ).transform_features_layer()
    module.tft_layer = tft_layer
  signatures = {}
  for name, fn in originals.items():
    if not _reads(fn, model_vars):
      signatures[name] = fn
      continue
    try:
      spec = (_parse_spec(fn, label_key)
              if signatures_lib.takes_examples(fn) else None)
      signatures[name] = _recreated(model, fn, tft_layer, spec, label_key)
    except (Keras3ExportError, ValueError, TypeError, KeyError) as e:
      raise Keras3ExportError(
          f"Serving signature {name!r} of the Trainer's model cannot be "
          f"re-created for the new model: {e}. It must follow the TFX pattern "
          "(serialized tf.Examples -> tf.io.parse_example -> the Transform "
          "layer, given `transform_graph` -> model -> outputs by name).") from e
  return module, signatures


def _sample_inputs(fn, examples: Sequence[bytes]) -> Dict[str, tf.Tensor]:
  if signatures_lib.takes_examples(fn):
    return {signatures_lib.input_specs(fn)[0][0]:
                tf.constant(list(examples), tf.string)}
  rng = np.random.RandomState(0)
  out = {}
  for name, spec in signatures_lib.input_specs(fn):
    shape = [2 if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
      value = np.full(shape, b"a", dtype=object)
    elif spec.dtype.is_integer:
      value = rng.randint(0, 3, shape)
    else:
      value = rng.uniform(0, 1, shape)
    out[name] = tf.constant(value, dtype=spec.dtype)
  return out


def _check(path: str, originals, examples: Sequence[bytes]) -> None:
  """The saved signatures keep names and specs, and run on the samples."""
  saved = tf.saved_model.load(path)
  if set(saved.signatures) != set(originals):
    raise Keras3ExportError(
        f"The written SavedModel has signatures {sorted(saved.signatures)}, "
        f"the Trainer's {sorted(originals)}.")
  for name, fn in originals.items():
    got = signatures_lib.signature_specs(saved.signatures[name])
    if got != signatures_lib.signature_specs(fn):
      raise Keras3ExportError(
          f"Signature {name!r} was written with inputs/outputs {got}, the "
          f"Trainer's are {signatures_lib.signature_specs(fn)}.")
    if not examples and signatures_lib.takes_examples(fn):
      continue
    sample = _sample_inputs(fn, examples)
    try:
      want, out = fn(**sample), saved.signatures[name](**sample)
    except (tf.errors.OpError, ValueError, TypeError) as e:
      logging.warning("Signature %r not run on the sample inputs: %s", name, e)
      continue
    for key in want:
      if want[key].dtype != out[key].dtype or want[key].shape != out[key].shape:
        raise Keras3ExportError(
            f"Signature {name!r} output {key!r} is {out[key].dtype.name}"
            f"{out[key].shape.as_list()}, the Trainer's "
            f"{want[key].dtype.name}{want[key].shape.as_list()}.")


def export_keras3(model, source_dir: str, path: str,
                  sample_serialized_examples: Optional[Sequence[bytes]] = None,
                  label_key: Optional[str] = None,
                  transform_output_dir: Optional[str] = None) -> Dict[str, Any]:
  """Writes ``model`` at ``path`` as the Trainer wrote its model at ``source_dir``.

  ``path`` gets a SavedModel with the signatures of the SavedModel at
  ``source_dir`` (same names, input and output specs), computing with
  ``model``'s weights, plus ``path/model.keras``.

  Example:

      export_keras3(pruned, model_io.serving_dir(trainer_uri), staging_dir,
                    sample_serialized_examples=eval_examples[:8],
                    label_key="species", transform_output_dir=transform_dir)

  Args:
    model: the Keras 3 model to write (e.g. pruned; for new shapes, with the
      input model's inputs and outputs).
    source_dir: the input model's serving directory (a SavedModel written
      from a Keras 3 model, usually with its ``model.keras``).
    path: the directory to write (local; stage it for remote URIs).
    sample_serialized_examples: raw serialized tf.Examples to run the written
      signatures once (output dtypes and shapes must be the Trainer's).
    label_key: the label, left out of re-created signatures' parsing.
    transform_output_dir: the TransformGraph, needed to re-create signatures
      of a model with new shapes when the Trainer used Transform.

  Returns:
    {'method': 'assigned' or 'regenerated', 'signatures': names,
     'regenerated': names re-created, 'kept': names kept as they were}.

  Raises:
    TypeError: ``model`` is not a Keras 3 model.
    Keras3ExportError: a signature cannot be re-created or does not keep its
      specs.
  """
  import keras  # pylint: disable=g-import-not-at-top
  if not isinstance(model, keras.Model):
    raise TypeError(f"`model` must be a Keras 3 model, got "
                    f"{type(model).__module__}.{type(model).__name__}.")
  loaded = tf.saved_model.load(source_dir)
  originals = dict(loaded.signatures)
  examples = list(sample_serialized_examples or [])
  os.makedirs(path, exist_ok=True)
  if not originals:
    logging.warning("%s has no serving signatures: writing Keras' own export.",
                    source_dir)
    model.export(path, format="tf_saved_model")
    info = {"method": "regenerated", "signatures": [], "regenerated": [],
            "kept": []}
  else:
    model_vars = _model_variables(loaded)
    plan, why = _same_shape_plan(model, model_vars)
    if plan is not None:
      for var, weight in plan:
        var.assign(np.asarray(weight.numpy(), dtype=var.dtype.as_numpy_dtype))
      tf.saved_model.save(loaded, path, signatures=originals)
      info = {"method": "assigned", "signatures": sorted(originals),
              "regenerated": [], "kept": sorted(originals)}
    else:
      logging.info("Re-creating the serving signatures: %s.", why)
      module, signatures = _regenerated_module(
          model, loaded, originals, model_vars, label_key, transform_output_dir)
      tf.saved_model.save(module, path, signatures=signatures)
      regenerated = sorted(n for n in signatures
                           if signatures[n] is not originals[n])
      info = {"method": "regenerated", "signatures": sorted(originals),
              "regenerated": regenerated,
              "kept": sorted(set(originals) - set(regenerated))}
    _check(path, originals, examples)
  model.save(os.path.join(path, model_io.KERAS_FILENAME))
  logging.info("Wrote %s (%s signatures %s) and %s.", path, info["method"],
               info["signatures"], model_io.KERAS_FILENAME)
  return info
