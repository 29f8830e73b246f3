"""Re-creating a Trainer model's serving signatures for a rebuilt Keras model.

A Keras model loaded from the Trainer's SavedModel keeps its ``.signatures``, but
their concrete functions read that model's variables. A model rebuilt with other
variables (e.g. narrower layers after channel pruning) needs new functions with the
same names, inputs and outputs. TFX Trainer modules follow one pattern, which this
module re-creates:

    serving_default(examples: tf.string[None])
        -> tf.io.parse_example(examples, raw_feature_spec)   (label excluded)
        -> model.tft_layer(features)                         (with Transform)
        -> model(features) -> {output name: tensor}

Signatures taking named tensors feed them to the model (through ``tft_layer`` when
the model's inputs are not among them). Signatures that read none of the model's
weights (TFX's ``transform_features``) are kept as they are. Every re-created
signature is first run on the ORIGINAL model and must reproduce the original
signature's outputs; otherwise :class:`SignatureExportError` names it. An
original signature is run only if its graph holds nothing but computation
(:func:`unsafe_ops` reads the graph first): one holding an op that may act
outside the model (``tf.io.write_file``, ``tf.print``, ``py_function``, ...) is
refused if it must be re-created, and kept unrun if it is kept as it is.

    info = save_with_signatures(narrow, original, "/out/Format-Serving",
                                sample_serialized_examples=examples)
"""

import dataclasses
import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf


class SignatureExportError(ValueError):
  """A serving signature cannot be re-created exactly for the rebuilt model."""


@dataclasses.dataclass
class _Recipe:
  name: str
  inputs: List[Tuple[str, tf.TensorSpec]]
  output_keys: List[str]
  kind: str  # 'examples' | 'tensors' | 'keep'
  takes_examples: bool  # one tf.string[None] input: serialized tf.Examples
  parse_spec: Optional[Dict[str, Any]] = None


# Stateful ops a serving graph may hold without acting outside the model's
# computation: calls (their bodies are checked too), variable reads, lookup
# tables (TFT vocabularies, read from the model's own assets), assertions and
# random numbers. Any other stateful op (tf.io.write_file's WriteFile, tf.print,
# py_function, summaries, variable assignments) could act on the world.
_SAFE_STATEFUL_OPS = frozenset({
    "StatefulPartitionedCall", "PartitionedCall", "ReadVariableOp",
    "VarHandleOp", "VarIsInitializedOp", "VariableShape", "ResourceGather",
    "HashTableV2", "MutableHashTableV2", "MutableDenseHashTableV2",
    "AnonymousHashTable", "LookupTableFindV2", "LookupTableSizeV2",
    "LookupTableImportV2", "InitializeTableV2", "InitializeTableFromTextFileV2",
    "Assert", "RandomUniform", "RandomUniformInt", "RandomStandardNormal",
    "TruncatedNormal",
})


def unsafe_ops(fn) -> List[str]:
  """Stateful op types in ``fn``'s graph (and the functions it calls) that may
  act outside the model's computation; [] if running ``fn`` only computes.

  Read from the graph, without running it.
  """
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.python.framework import op_def_registry
  graph_def = fn.graph.as_graph_def()
  library = {f.signature.name for f in graph_def.library.function}
  ops = {n.op for n in graph_def.node}
  for f in graph_def.library.function:
    ops.update(n.op for n in f.node_def)
  unsafe = []
  for op in sorted(ops - library - _SAFE_STATEFUL_OPS):
    op_def = op_def_registry.get(op)
    if op_def is None or op_def.is_stateful:  # Unknown: do not run it.
      unsafe.append(op)
  return unsafe


def input_specs(fn) -> List[Tuple[str, tf.TensorSpec]]:
  """[(name, TensorSpec)] of a signature's inputs (either Keras)."""
  args, kwargs = fn.structured_input_signature
  specs = [(s.name, s) for s in tf.nest.flatten(args)]
  specs += [(k, kwargs[k]) for k in sorted(kwargs)]
  return specs


def takes_examples(fn) -> bool:
  """Whether a signature takes one batch of serialized tf.Examples."""
  inputs = input_specs(fn)
  return (len(inputs) == 1 and inputs[0][1].dtype == tf.string
          and inputs[0][1].shape.rank == 1)


def reads_model_weights(fn, model) -> bool:
  """True if the concrete function captures any of the model's variables."""
  own = {id(w) for w in model.weights}
  handles = {id(getattr(w, "handle", w)) for w in model.weights}
  for v in getattr(fn, "variables", ()):
    if id(v) in own or id(getattr(v, "handle", v)) in handles:
      return True
  return False


def find_tft_layer(model) -> Tuple[Optional[str], Any]:
  """(attribute name, layer) of a TFT TransformFeaturesLayer attached to the model."""
  layer = getattr(model, "tft_layer", None)
  if layer is not None:
    return "tft_layer", layer
  for attr, value in vars(model).items():
    if "TransformFeaturesLayer" in type(value).__name__:
      return attr, value
  return None, None


def _const(nodes: Mapping[str, Any], ref: str) -> np.ndarray:
  name = ref.lstrip("^").split(":")[0]
  for _ in range(8):  # Follow Identity chains to the Const.
    node = nodes.get(name)
    if node is None:
      break
    if node.op == "Const":
      return tf.make_ndarray(node.attr["value"].tensor)
    if node.op != "Identity":
      break
    name = node.input[0].lstrip("^").split(":")[0]
  raise SignatureExportError(f"cannot read the constant {ref!r}")


def infer_raw_feature_spec(fn) -> Dict[str, Any]:
  """The feature spec of the one tf.io.parse_example in a (restored) signature.

  Raises:
    SignatureExportError: no, or several different, ParseExampleV2 ops; ragged
      or sequence features.
  """
  gd = fn.graph.as_graph_def()
  bodies = [list(gd.node)] + [list(f.node_def) for f in gd.library.function]
  specs = []
  for body in bodies:
    nodes = {n.name: n for n in body}
    for node in body:
      if node.op != "ParseExampleV2":
        continue
      attr = node.attr
      num_dense = len(attr["Tdense"].list.type)
      if attr["ragged_value_types"].list.type:
        raise SignatureExportError("it parses ragged features")
      sparse_keys = _const(nodes, node.input[2]).ravel()
      dense_keys = _const(nodes, node.input[3]).ravel()
      spec = {}
      for key, dtype in zip(sparse_keys, attr["sparse_types"].list.type):
        spec[key.decode()] = tf.io.VarLenFeature(tf.as_dtype(dtype))
      for i in range(num_dense):
        shape = tf.TensorShape(attr["dense_shapes"].list.shape[i]).as_list()
        if any(d is None or d < 0 for d in shape):
          raise SignatureExportError("it parses sequence features")
        dtype = tf.as_dtype(attr["Tdense"].list.type[i])
        default = _const(nodes, node.input[5 + i])
        spec[dense_keys[i].decode()] = tf.io.FixedLenFeature(
            shape, dtype,
            default_value=None if default.size == 0 else default.reshape(shape))
      specs.append(spec)
  if not specs:
    raise SignatureExportError("no tf.io.parse_example was found in it")
  if any(set(s) != set(specs[0]) for s in specs[1:]):
    raise SignatureExportError("it parses examples in several different ways")
  return specs[0]


def _recipes(original_model) -> List[_Recipe]:
  out = []
  for name, fn in dict(original_model.signatures).items():
    outputs = fn.structured_outputs
    if not isinstance(outputs, Mapping):
      raise SignatureExportError(
          f"Signature '{name}' returns {type(outputs).__name__}, not a dict of "
          "named tensors.")
    inputs = input_specs(fn)
    examples_in = takes_examples(fn)
    if not reads_model_weights(fn, original_model):
      kind = "keep"
    else:
      kind = "examples" if examples_in else "tensors"
    out.append(_Recipe(name, inputs, sorted(outputs), kind, examples_in))
  return out


def _feed(model, features: Mapping[str, tf.Tensor]):
  names = list(model.input_names)
  missing = [n for n in names if n not in features]
  if missing:
    raise SignatureExportError(
        f"the model's inputs {missing} are not among the features "
        f"{sorted(features)}")
  nested = model._nested_inputs  # pylint: disable=protected-access
  if isinstance(nested, Mapping):
    return {n: features[n] for n in names}
  if isinstance(nested, (list, tuple)):
    return [features[n] for n in names]
  return features[names[0]]


def map_outputs(model, out, keys: Sequence[str],
                error: Optional[type] = None) -> Dict[str, tf.Tensor]:
  """A model call's outputs by the signature's output ``keys`` (either Keras).

  Raises:
    error (default SignatureExportError): they cannot be matched.
  """
  error = error or SignatureExportError
  if isinstance(out, Mapping) and set(keys) <= set(out):
    return {k: out[k] for k in keys}
  if tf.is_tensor(out) and len(keys) == 1:
    return {keys[0]: out}
  names = list(getattr(model, "output_names", []) or [])
  if isinstance(out, (list, tuple)) and set(keys) <= set(names):
    return {k: out[names.index(k)] for k in keys}
  raise error(
      f"the model's outputs ({type(out).__name__}, output names {names}) do "
      f"not map onto the signature's outputs {list(keys)}")


def _make_function(model, recipe: _Recipe, tft_layer, label_key):
  """The re-created tf.function of one signature, for ``model``."""

  def outputs_for(features):
    features = dict(features)
    if tft_layer is not None and not all(n in features for n in model.input_names):
      features = dict(tft_layer(features))
      features.pop(label_key, None)
    out = model(_feed(model, features), training=False)
    return map_outputs(model, out, recipe.output_keys)

  specs = [tf.TensorSpec(s.shape, s.dtype, name=n) for n, s in recipe.inputs]
  if recipe.kind == "examples":
    def serve(examples):
      return outputs_for(tf.io.parse_example(examples, recipe.parse_spec))
  else:
    names = [n for n, _ in recipe.inputs]

    def serve(*tensors):
      return outputs_for(dict(zip(names, tensors)))
  return tf.function(serve, input_signature=specs)


def _synthesize_examples(spec: Mapping[str, Any], n: int = 8) -> List[bytes]:
  rng = np.random.RandomState(0)
  out = []
  for _ in range(n):
    feats = {}
    for key, f in spec.items():
      size = int(np.prod(getattr(f, "shape", [1]) or [1]))
      dtype = f.dtype
      if dtype == tf.string:
        feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[b"a"] * size))
      elif dtype.is_integer:
        feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(
            value=rng.randint(0, 10, size).tolist()))
      else:
        feats[key] = tf.train.Feature(float_list=tf.train.FloatList(
            value=rng.uniform(0, 1, size).tolist()))
    out.append(tf.train.Example(features=tf.train.Features(
        feature=feats)).SerializeToString())
  return out


def _sample_inputs(recipe: _Recipe, examples: Optional[Sequence[bytes]]
                   ) -> Dict[str, tf.Tensor]:
  if recipe.takes_examples:
    return {recipe.inputs[0][0]: tf.constant(list(examples), tf.string)}
  rng = np.random.RandomState(0)
  out = {}
  for name, spec in recipe.inputs:
    shape = [2 if d is None else d for d in spec.shape.as_list()]
    if spec.dtype == tf.string:
      value = np.full(shape, b"a", dtype=object)
    elif spec.dtype.is_integer:
      value = rng.randint(0, 10, shape)
    elif spec.dtype.is_bool:
      value = rng.randint(0, 2, shape).astype(bool)
    else:
      value = rng.uniform(0, 1, shape)
    out[name] = tf.constant(value, dtype=spec.dtype)
  return out


def _compare(name: str, want: Mapping[str, tf.Tensor],
             got: Mapping[str, tf.Tensor], values: bool) -> Optional[str]:
  if set(want) != set(got):
    return f"outputs {sorted(got)} instead of {sorted(want)}"
  for k in want:
    a, b = np.asarray(want[k]), np.asarray(got[k])
    if want[k].dtype != got[k].dtype or a.shape != b.shape:
      return (f"output '{k}' is {got[k].dtype.name}{list(b.shape)} instead of "
              f"{want[k].dtype.name}{list(a.shape)}")
    if values and a.dtype.kind == "f":
      scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
      if not np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True):
        return (f"output '{k}' differs (max abs difference "
                f"{float(np.max(np.abs(a - b))):.3g})")
    elif values and not np.array_equal(a, b):
      return f"output '{k}' differs"
  del name
  return None


def _spec_key(spec) -> Tuple:
  return (tuple(spec.shape.as_list()) if spec.shape.rank is not None else None,
          spec.dtype.name)


def signature_specs(fn) -> Tuple[Dict[str, Tuple], Dict[str, Tuple]]:
  """({input name: (shape, dtype)}, {output name: (shape, dtype)}) of a signature."""
  inputs = {n: _spec_key(s) for n, s in input_specs(fn)}
  outputs = {k: _spec_key(s) for k, s in fn.structured_outputs.items()}
  return inputs, outputs


def save_with_signatures(new_model, original_model, path: str,
                         sample_serialized_examples: Optional[Sequence[bytes]] = None,
                         raw_feature_spec: Optional[Mapping[str, Any]] = None,
                         label_key: Optional[str] = None,
                         alternative: str = "keep the original model"
                         ) -> Dict[str, Any]:
  """Saves ``new_model`` (Keras SavedModel) with ``original_model``'s signatures.

  Example:

      save_with_signatures(narrow, trainer_model, "/out/Format-Serving",
                           sample_serialized_examples=eval_examples[:32],
                           label_key="label")

  Args:
    new_model: the rebuilt tf_keras model, with the original's inputs and
      outputs. The original's TFT layer, if any, is attached to it.
    original_model: the tf_keras model loaded from the Trainer's SavedModel.
    path: the SavedModel directory to write.
    sample_serialized_examples: raw serialized tf.Examples for the checks;
      synthesized from the feature spec when None.
    raw_feature_spec: what serving parses; None: read from the original's
      signature. ``label_key`` is removed from it.
    label_key: the label, dropped from parsed and transformed features.
    alternative: what to suggest when a signature cannot be re-created.

  Returns:
    {'signatures': all names, 'regenerated': re-created, 'kept': kept as is}.

  Raises:
    SignatureExportError: naming the signature and what to do.
  """
  originals = dict(getattr(original_model, "signatures", None) or {})
  if not originals:
    logging.warning("The original model has no serving signatures; saving the "
                    "rebuilt model with Keras' default signature.")
    new_model.save(path, save_format="tf", include_optimizer=False)
    return {"signatures": [], "regenerated": [], "kept": []}

  fail = functools.partial(_failure, alternative=alternative)
  recipes = _recipes(original_model)
  attr, tft_layer = find_tft_layer(original_model)
  if tft_layer is not None:
    setattr(new_model, attr, tft_layer)
  _set_parse_specs(recipes, originals, raw_feature_spec, label_key, fail)
  examples = _examples_for(recipes, originals, sample_serialized_examples)
  # The originals are run below to check the re-created signatures: only if
  # running them computes and does nothing else.
  unsafe = {r.name: unsafe_ops(originals[r.name]) for r in recipes}
  for recipe in recipes:
    if unsafe[recipe.name] and recipe.kind != "keep":
      raise fail(recipe.name, "its graph holds ops that may act outside the "
                 f"model's computation ({', '.join(unsafe[recipe.name])}), so "
                 "the Pruner does not run it to check the re-created signature")
  new_fns = {r.name: _new_function(r, originals[r.name], original_model,
                                   new_model, tft_layer, label_key, examples,
                                   fail)
             for r in recipes}
  try:
    new_model.save(path, save_format="tf", include_optimizer=False,
                   signatures=new_fns)
  except (ValueError, TypeError, AssertionError) as e:
    raise SignatureExportError(
        f"Saving the rebuilt model with signatures {sorted(new_fns)} failed: "
        f"{type(e).__name__}: {str(e)[:300]}. Use {alternative}.") from e
  _check_saved(path, recipes, originals, examples, unsafe, fail)
  regenerated = [r.name for r in recipes if r.kind != "keep"]
  kept = [r.name for r in recipes if r.kind == "keep"]
  logging.info("Saved %s with signatures %s re-created and %s kept as they were.",
               path, regenerated, kept)
  return {"signatures": sorted(originals), "regenerated": regenerated,
          "kept": kept}


def _failure(name: str, why: str, alternative: str) -> SignatureExportError:
  return SignatureExportError(
      f"Serving signature '{name}' of the original model cannot be re-created "
      f"for the rebuilt model: {why}. The rebuilt signature follows the TFX "
      "pattern (serialized tf.Examples -> tf.io.parse_example -> optional "
      "tft_layer -> model -> outputs by name). Pass `raw_feature_spec` if "
      f"the parsing differs, or use {alternative}.")


def _set_parse_specs(recipes: List[_Recipe], originals, raw_feature_spec,
                     label_key: Optional[str], fail) -> None:
  """What each examples-taking signature parses (the label left out)."""
  for recipe in recipes:
    if recipe.kind == "examples":
      if raw_feature_spec is not None:
        spec = dict(raw_feature_spec)
      else:
        try:
          spec = infer_raw_feature_spec(originals[recipe.name])
        except SignatureExportError as e:
          raise fail(recipe.name, f"its feature spec cannot be read ({e})") from e
      spec.pop(label_key, None)
      recipe.parse_spec = spec


def _examples_for(recipes: List[_Recipe], originals,
                  sample_serialized_examples: Optional[Sequence[bytes]]
                  ) -> List[bytes]:
  """The examples the checks run on: given, else synthesized from a spec."""
  examples = list(sample_serialized_examples or [])
  if examples or not any(r.takes_examples for r in recipes):
    return examples
  spec = next((r.parse_spec for r in recipes if r.parse_spec), None)
  for recipe in recipes:
    if spec is None and recipe.takes_examples:
      try:
        spec = infer_raw_feature_spec(originals[recipe.name])
      except SignatureExportError:
        continue
  if spec is None:
    raise SignatureExportError(
        "No sample_serialized_examples were given and no feature spec can be "
        "read from the signatures: pass sample_serialized_examples.")
  return _synthesize_examples(spec)


def _new_function(recipe: _Recipe, original_fn, original_model, new_model,
                  tft_layer, label_key: Optional[str], examples: List[bytes],
                  fail):
  """The signature for ``new_model``, once its recipe reproduces the original."""
  if recipe.kind == "keep":
    return original_fn
  sample = _sample_inputs(recipe, examples)
  want = original_fn(**sample)
  try:
    wide = _make_function(original_model, recipe, tft_layer, label_key)
    problem = _compare(recipe.name, want,
                       wide(*[sample[n] for n, _ in recipe.inputs]), True)
  except SignatureExportError as e:
    problem = str(e)
  except (ValueError, TypeError, KeyError, tf.errors.OpError) as e:
    problem = f"{type(e).__name__}: {str(e)[:300]}"
  if problem:
    raise fail(recipe.name, "re-created for the original model, it does not "
               f"reproduce the original signature: {problem}")
  narrow = _make_function(new_model, recipe, tft_layer, label_key)
  return narrow.get_concrete_function()


def _check_saved(path: str, recipes: List[_Recipe], originals,
                 examples: List[bytes], unsafe: Mapping[str, List[str]],
                 fail) -> None:
  """The saved signatures have the original names and specs, and outputs."""
  loaded = tf.saved_model.load(path)
  if set(loaded.signatures) != set(originals):
    raise SignatureExportError(
        f"The saved model has signatures {sorted(loaded.signatures)} instead of "
        f"{sorted(originals)}.")
  for recipe in recipes:
    name = recipe.name
    if signature_specs(loaded.signatures[name]) != signature_specs(originals[name]):
      raise fail(name, f"the saved signature's inputs/outputs "
                 f"{signature_specs(loaded.signatures[name])} differ from the "
                 f"original's {signature_specs(originals[name])}")
    if unsafe[name]:
      continue  # Kept as it was, and not run: its specs were compared above.
    sample = _sample_inputs(recipe, examples)
    problem = _compare(name, originals[name](**sample),
                       loaded.signatures[name](**sample),
                       values=recipe.kind == "keep")
    if problem:
      raise fail(name, f"the saved signature returns {problem}")
