"""Loading is safe: no pickle and no code from artifacts; custom objects are named by the user.

* No module under components/ or pipelines/ unpickles, unmarshals, evals or
  loads YAML unsafely; the only code imported is the user's declared
  ``module_file`` (checked on the source, with ``ast``).
* Keras models load in tf_keras's safe mode, also through the SavedModel loader
  (which, outside safe mode, rebuilds a Lambda layer's Python lambda from
  bytecode stored in the artifact and so runs it).
* A model with a custom layer fails to load with an error that says to define
  ``custom_objects`` in ``module_file``, and loads when the module does: in the
  Pruner, the Quantizer and the CompressionEvaluator.
"""

import ast
import importlib.util
import os

import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx.types import standard_artifacts

from tfx_compression.components.common import model_io
from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.components.pruner import executor as pruner_executor
from tfx_compression.components.quantizer import executor as quantizer_executor
from tests import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCANNED = ("components", "pipelines")

# module -> functions that read objects back by running code (unpickling,
# unmarshalling bytecode) or that evaluate text.
UNSAFE_CALLS = {
    "pickle": {"load", "loads", "Unpickler"},
    "cPickle": {"load", "loads"},
    "dill": {"load", "loads"},
    "cloudpickle": {"load", "loads"},
    "marshal": {"load", "loads"},
    "shelve": {"open"},
    "joblib": {"load"},
    "yaml": {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load",
             "full_load_all"},
    "jsonpickle": {"decode"},
}
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve",
                  "joblib", "jsonpickle"}
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}
# Calls that import Python code: allowed only on the user's module_file.
CODE_IMPORTS = {"exec_module", "import_func_from_source", "spec_from_file_location"}


def _sources():
  for top in SCANNED:
    for root, _, files in os.walk(os.path.join(ROOT, top)):
      for name in sorted(files):
        if name.endswith(".py"):
          path = os.path.join(root, name)
          with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, ROOT), ast.parse(f.read(), path)


def _call_name(node: ast.Call):
  """('module', 'function') of ``module.function(...)``, (None, name) of ``name(...)``."""
  func = node.func
  if isinstance(func, ast.Attribute):
    base = func.value
    return (base.id if isinstance(base, ast.Name) else
            base.attr if isinstance(base, ast.Attribute) else None), func.attr
  if isinstance(func, ast.Name):
    return None, func.id
  return None, None


def _enclosing_functions(tree):
  """Maps each node to the innermost function definition holding it."""
  owner = {}

  def visit(node, function):
    for child in ast.iter_child_nodes(node):
      inner = child if isinstance(child, (ast.FunctionDef,
                                          ast.AsyncFunctionDef)) else function
      owner[child] = inner
      visit(child, inner)
  visit(tree, None)
  return owner


def test_the_scan_sees_the_packages():
  files = [path for path, _ in _sources()]
  assert "components/common/model_io.py" in files
  assert "pipelines/kubeflow_runner.py" in files
  assert len(files) > 20


def unsafe_uses(path: str, tree: ast.AST) -> list:
  """'path:line what' for every unsafe import or call in ``tree``."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [f"{path}:{node.lineno} import {a.name}" for a in node.names
                if a.name.split(".")[0] in UNSAFE_MODULES]
    elif isinstance(node, ast.ImportFrom) and node.module:
      if node.module.split(".")[0] in UNSAFE_MODULES:
        found.append(f"{path}:{node.lineno} from {node.module} import ...")
    elif isinstance(node, ast.Call):
      module, name = _call_name(node)
      if module in UNSAFE_CALLS and name in UNSAFE_CALLS[module]:
        found.append(f"{path}:{node.lineno} {module}.{name}(...)")
      if module is None and name in UNSAFE_BUILTINS:
        found.append(f"{path}:{node.lineno} {name}(...)")
      if name == "load" and module in ("np", "numpy"):
        for kw in node.keywords:
          if kw.arg == "allow_pickle" and not (
              isinstance(kw.value, ast.Constant) and kw.value.value is False):
            found.append(f"{path}:{node.lineno} np.load(allow_pickle=...)")
  return found


def test_the_scan_finds_unsafe_loading():
  snippet = "\n".join([
      "import pickle", "from dill import loads", "import yaml, numpy as np",
      "pickle.loads(b'')", "yaml.load(text)", "yaml.safe_load(text)",
      "eval('1')", "np.load(p, allow_pickle=True)", "np.load(p)",
      "marshal.loads(b'')"])
  found = unsafe_uses("x.py", ast.parse(snippet))
  assert [f.split(" ", 1)[0] for f in found] == [
      "x.py:1", "x.py:2", "x.py:4", "x.py:5", "x.py:7", "x.py:8", "x.py:10"]


def test_no_unpickling_marshal_eval_or_unsafe_yaml():
  found = [f for path, tree in _sources() for f in unsafe_uses(path, tree)]
  assert not found, "unsafe loading in the packages:\n" + "\n".join(found)


def test_code_is_imported_only_from_the_users_module_file():
  """exec_module / import_func_from_source appear only in functions that take
  the user's ``module_file`` (and import that path)."""
  sites = []
  for path, tree in _sources():
    owner = _enclosing_functions(tree)
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and _call_name(node)[1] in CODE_IMPORTS:
        function = owner.get(node)
        params = ([a.arg for a in function.args.args] if function else [])
        sites.append((path, node.lineno, function.name if function else None))
        assert "module_file" in params, (
            f"{path}:{node.lineno} imports code in "
            f"{function.name if function else 'module scope'}, which does not "
            "take `module_file`: only the user's declared module may be run.")
  # The one module_file loader the three components share, and nothing else.
  assert {p for p, _, _ in sites} == {"components/common/user_module.py"}, sites


def test_loading_runs_in_keras_safe_mode(tmp_path, monkeypatch):
  """model_io.load_keras_model turns safe mode on for the SavedModel loader,
  where tf_keras's own ``safe_mode=True`` default does not reach."""
  from tf_keras.src.saving import serialization_lib  # pylint: disable=g-import-not-at-top
  inp = keras.Input(shape=(2,), name="x")
  keras.Model(inp, keras.layers.Dense(2)(inp)).save(str(tmp_path / "m"),
                                                    save_format="tf")
  seen = []
  original = keras.models.load_model

  def spy(*args, **kwargs):
    seen.append(serialization_lib.in_safe_mode())
    return original(*args, **kwargs)

  monkeypatch.setattr(keras.models, "load_model", spy)
  model_io.load_keras_model(str(tmp_path / "m"))
  assert seen == [True]
  assert not serialization_lib.in_safe_mode()  # restored afterwards


def test_lambda_bytecode_in_an_artifact_never_runs(tmp_path):
  marker = str(tmp_path / "the_lambda_ran")
  inp = keras.Input(shape=(3,), name="x")
  # The default argument is saved with the lambda's bytecode.
  out = keras.layers.Lambda(
      lambda t, m=marker: (open(m, "a").close(), t * 2.0)[1], name="lam")(inp)
  path = str(tmp_path / "lambda_model")
  keras.Model(inp, out).save(path, save_format="tf")
  os.remove(marker)  # written while tracing for the save

  with pytest.raises(model_io.ModelLoadError) as info:
    model_io.load_keras_model(path, "model")
  assert not os.path.exists(marker)
  message = str(info.value)
  assert "lam (Lambda)" in message and "named function" in message
  assert "`module_file`" in message

  # The hazard the safe mode closes: tf_keras's plain SavedModel loading
  # rebuilds the lambda from the artifact's bytecode and runs it.
  keras.models.load_model(path, compile=False)(tf.ones([1, 3]))
  assert os.path.exists(marker)


def test_layers_held_as_attributes_still_load(tmp_path):
  """Like TFX's ``model.tft_layer``: a layer the serving signature uses but the
  model's graph does not is not a custom layer of the model."""

  class AddOne(keras.layers.Layer):

    def call(self, x):
      return x + 1.0

  inp = keras.Input(shape=(4,), name="x")
  model = keras.Model(inp, keras.layers.Dense(3, name="out")(inp))
  model.extra = AddOne()

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
  def serve(x):
    return model(model.extra(x))

  path = str(tmp_path / "m")
  model.save(path, save_format="tf", signatures={"serving_default": serve})
  loaded = model_io.load_keras_model(path)
  assert [l.name for l in loaded.layers][:2] == ["x", "out"]


# ---------------------------------------------------------------------------
# Custom layers: named by the user in module_file, in every component.
# ---------------------------------------------------------------------------

CUSTOM_LAYER_SOURCE = '''
import tf_keras as keras


class Scale(keras.layers.Layer):
  """Multiplies by a learned per-feature scale (a custom layer)."""

  def build(self, input_shape):
    self.scale = self.add_weight(name="scale", shape=(input_shape[-1],),
                                 initializer="ones")

  def call(self, x):
    return x * self.scale


custom_objects = {"Scale": Scale}
'''


def write_custom_layer_module(directory: str) -> str:
  """A user module file defining a custom layer and its ``custom_objects``."""
  path = os.path.join(directory, "custom_layer_module.py")
  with open(path, "w") as f:
    f.write(CUSTOM_LAYER_SOURCE)
  return path


def save_custom_layer_model(root: str, module_path: str,
                            name: str = "custom_layer_model"):
  """Digits inputs -> Dense -> Scale (custom) -> softmax, saved as the Trainer does.

  The Scale weights are set away from their initial value, so a load that
  rebuilt the layer without its weights would show.
  """
  spec = importlib.util.spec_from_file_location("custom_layer_module",
                                                module_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  keras.utils.set_random_seed(0)
  inputs = {k: keras.Input(shape=(1,), name=k) for k in fixtures.FEATURES}
  x = keras.layers.Concatenate()(list(inputs.values()))
  x = keras.layers.Dense(16, activation="relu", name="dense1")(x)
  x = module.Scale(name="scale")(x)
  out = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
  model = keras.Model(inputs, out)
  model.get_layer("scale").set_weights([np.linspace(0.5, 2.0, 16)])
  return fixtures.save_trainer_model(model, root, name)


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("custom_layer"))
  module = write_custom_layer_module(root)
  return module, save_custom_layer_model(root, module)


def _scale(model) -> np.ndarray:
  return model.get_layer("scale").get_weights()[0]


def test_custom_layer_needs_custom_objects(custom):
  _, art = custom
  with pytest.raises(model_io.ModelLoadError) as info:
    model_io.load_keras_model(model_io.serving_dir(art.uri), "model")
  message = str(info.value)
  assert "scale (Scale)" in message
  assert "`custom_objects = {'Scale': Scale}`" in message
  assert "`module_file`" in message


def test_pruner_loads_custom_layers_from_module_file(custom, examples_artifact,
                                                     schema_artifact, tmp_path):
  module, art = custom
  out = standard_artifacts.Model()
  out.uri = str(tmp_path / "pruned")
  run = standard_artifacts.ModelRun()
  run.uri = str(tmp_path / "run")
  pruner_executor.Executor().Do(
      {"model": [art], "examples": [examples_artifact],
       "schema": [schema_artifact]},
      {"pruned_model": [out], "model_run": [run]},
      {"label_key": "label", "train_steps": 4, "batch_size": 8,
       "eval_split": "", "module_file": module, "target_sparsity": 0.5})
  objects = pruner_executor._user_module(module)[1]  # pylint: disable=protected-access
  pruned = model_io.load_keras_model(model_io.serving_dir(out.uri), "model",
                                     objects)
  assert type(pruned.get_layer("scale")).__name__ == "Scale"
  assert _scale(pruned).shape == (16,)
  kernel = pruned.get_layer("dense1").get_weights()[0]
  assert 0.4 < float(np.mean(kernel == 0)) < 0.6
  # Without the module the pruned model is refused too.
  with pytest.raises(model_io.ModelLoadError, match="custom_objects"):
    model_io.load_keras_model(model_io.serving_dir(out.uri))


def test_quantizer_loads_custom_layers_from_module_file(custom, tmp_path):
  module, art = custom
  out = standard_artifacts.Model()
  out.uri = str(tmp_path / "quantized")
  os.makedirs(out.uri)
  quantizer_executor.Executor().Do(
      {"model": [art]}, {"quantized_model": [out]},
      {"quantization": "dynamic", "module_file": module})
  tflite = os.path.join(out.uri, model_io.SERVING_DIR, model_io.TFLITE_FILENAME)
  assert os.path.getsize(tflite) > 0
  tf.lite.Interpreter(model_path=tflite).allocate_tensors()


def test_evaluator_loads_custom_layers_from_module_file(custom):
  module, art = custom
  path = model_io.serving_dir(art.uri)
  with pytest.raises(model_io.ModelLoadError, match="custom_objects"):
    evaluation.ModelSource("candidate", "keras", path).load()
  predictor = evaluation.ModelSource("candidate", "keras", path, module).load()
  assert type(predictor.model.get_layer("scale")).__name__ == "Scale"
  np.testing.assert_allclose(_scale(predictor.model), np.linspace(0.5, 2.0, 16),
                             rtol=1e-6)
  feats = {k: np.ones((2, 1), np.float32) for k in fixtures.FEATURES}
  assert predictor.predict(feats).shape == (2, 10)
