"""TFX's penguin module as shipped, plus the one line, compressed on Keras 3.

The Trainer module is TFX's ``penguin_utils_keras.py`` read from the installed TFX,
with ``import os`` and the one line added after its ``tf.saved_model.save``:

    model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))

1. Its pipeline (CsvExampleGen -> StatisticsGen -> SchemaGen -> Transform -> Trainer)
   runs in a process that never imports tfx_compression, as a Kubeflow step would.
2. A second process runs the same pipeline plus Pruner -> Quantizer (int8) ->
   CompressionEvaluator -> stock Pusher: the first steps come from the cache.
3. A third process imports tfx_compression first and runs the Trainer's pipeline:
   ``tf.keras`` is still Keras 3 there.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.common import model_io
from tfx_compression.components.common import model_stats
from tfx_compression.pipelines import penguin_data
from tfx_compression.pipelines import summary

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "keras3_penguin"
TARGET_SPARSITY = 0.5
SAVE_LINE = 'model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))'
TFX_SAVE = ("tf.saved_model.save(model, fn_args.serving_model_dir, "
            "signatures=signatures)")

# The pipeline, run by each process. Compression is imported only for 'compress'
# and 'import_first'.
SCRIPT = r'''
import json, os, sys
stage, out, module_file, data = sys.argv[1:5]
if stage != "trainer":
  from tfx_compression import CompressionEvaluator, Pruner, Quantizer
from tfx import v1 as tfx

example_gen = tfx.components.CsvExampleGen(input_base=data)
statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
schema_gen = tfx.components.SchemaGen(
    statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
transform = tfx.components.Transform(
    examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
    module_file=module_file)
trainer = tfx.components.Trainer(
    module_file=module_file, examples=transform.outputs["transformed_examples"],
    transform_graph=transform.outputs["transform_graph"],
    schema=schema_gen.outputs["schema"],
    train_args=tfx.proto.TrainArgs(num_steps=100),
    eval_args=tfx.proto.EvalArgs(num_steps=5))
components = [example_gen, statistics_gen, schema_gen, transform, trainer]
if stage == "compress":
  data_args = dict(examples=example_gen.outputs["examples"],
                   schema=schema_gen.outputs["schema"],
                   transform_graph=transform.outputs["transform_graph"],
                   label_key="species")
  pruner = Pruner(model=trainer.outputs["model"], target_sparsity=%(target)r,
                  train_steps=100, **data_args)
  quantizer = Quantizer(model=pruner.outputs["pruned_model"], quantization="int8",
                        **data_args)
  evaluator = CompressionEvaluator(
      baseline_model=trainer.outputs["model"],
      candidate_model=quantizer.outputs["quantized_model"], metric="accuracy",
      max_drop=0.05, **data_args)
  pusher = tfx.components.Pusher(
      model=quantizer.outputs["quantized_model"],
      model_blessing=evaluator.outputs["blessing"],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=os.path.join(out, "serving_model"))))
  components += [pruner, quantizer, evaluator, pusher]
pipeline = tfx.dsl.Pipeline(
    pipeline_name=%(name)r, pipeline_root=os.path.join(out, "root"),
    components=components, enable_cache=True,
    metadata_connection_config=tfx.orchestration.metadata
    .sqlite_metadata_connection_config(os.path.join(out, "metadata.sqlite")),
    beam_pipeline_args=["--direct_running_mode=in_memory",
                        "--direct_num_workers=1"])
tfx.orchestration.LocalDagRunner().run(pipeline)
import tensorflow as tf
print(json.dumps({"tfx_compression": "tfx_compression" in sys.modules,
                  "tf_keras_module": tf.keras.Model.__module__,
                  "legacy": os.environ.get("TF_USE_LEGACY_KERAS")}))
''' % {"target": TARGET_SPARSITY, "name": NAME}


def penguin_module(folder) -> str:
  """TFX's penguin Keras module as shipped, plus `import os` and the one line."""
  from tfx.examples.penguin import penguin_utils_keras  # pylint: disable=g-import-not-at-top
  with open(penguin_utils_keras.__file__) as f:
    source = f.read()
  assert source.count(TFX_SAVE) == 1, "TFX's penguin module changed"
  indent = source.split(TFX_SAVE)[0].rsplit("\n", 1)[1]
  source = source.replace(TFX_SAVE, f"{TFX_SAVE}\n{indent}{SAVE_LINE}")
  source = "import os\n" + source
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / "penguin_utils_keras.py"
  path.write_text(source)
  return str(path)


def run_stage(stage, out, module_file, data):
  script = out / f"{stage}.py"
  script.write_text(SCRIPT)
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  proc = subprocess.run(
      [sys.executable, str(script), stage, str(out), module_file, data],
      cwd=str(out), env=env, capture_output=True, text=True, timeout=1500)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def artifact(store, node, type_name):
  art = summary.latest_artifact(store, NAME, node, type_name)
  assert art is not None, f"no {type_name} from {node}"
  return {"uri": art.uri, **summary.artifact_properties(art)}


def raw_examples(store, n=16):
  examples = artifact(store, "CsvExampleGen", "Examples")
  files = tf.io.gfile.glob(os.path.join(examples["uri"], "Split-eval", "*"))
  ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
  return [r.numpy() for r in ds.take(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return penguin_data.ensure_penguins_csv(str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def module_file(tmp_path_factory):
  return penguin_module(tmp_path_factory.mktemp("module"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_file, data):
  """Run 1: the Trainer's pipeline in a process that never imports us."""
  out = tmp_path_factory.mktemp("penguin3")
  info = run_stage("trainer", out, module_file, data)
  store = summary.open_store(str(out / "metadata.sqlite"))
  return out, info, artifact(store, "Trainer", "Model")


@pytest.fixture(scope="module")
def compressed(trained, module_file, data):
  """Run 2: the same pipeline plus compression, on the cached Trainer output."""
  out, _, trainer_model = trained
  info = run_stage("compress", out, module_file, data)
  return out, info, trainer_model


def test_trainer_ran_without_us_and_wrote_keras3(trained):
  _, info, trainer_model = trained
  assert info["tfx_compression"] is False
  serving = model_io.serving_dir(trainer_model["uri"])
  assert model_io.keras_file_version(
      os.path.join(serving, model_io.KERAS_FILENAME)).startswith("3.")
  assert model_io.model_kind(serving) == "keras3"


def test_compression_on_the_cached_trainer_output_is_blessed_and_pushed(compressed):
  out, info, trainer_model = compressed
  assert info["tfx_compression"] is True
  store = summary.open_store(str(out / "metadata.sqlite"))
  states = summary.latest_run(store, NAME)
  assert states["Trainer"] == "CACHED", states
  assert artifact(store, "Trainer", "Model")["uri"] == trainer_model["uri"]
  blessing = artifact(store, "CompressionEvaluator", "ModelBlessing")
  assert blessing["blessed"] == 1, blessing
  pushed = artifact(store, "Pusher", "PushedModel")
  assert pushed["pushed"] == 1
  assert os.path.isfile(os.path.join(pushed["pushed_destination"], "model.tflite"))
  quantized = artifact(store, "Quantizer", "Model")
  assert quantized["quantization"] == "int8"

  pruned = artifact(store, "Pruner", "Model")
  pruned_dir = model_io.serving_dir(pruned["uri"])
  # The pruned SavedModel serves raw serialized examples like the Trainer's.
  examples = tf.constant(raw_examples(store))
  want = tf.saved_model.load(model_io.serving_dir(
      trainer_model["uri"])).signatures["serving_default"](examples=examples)
  got = tf.saved_model.load(pruned_dir).signatures["serving_default"](
      examples=examples)
  assert sorted(got) == sorted(want)
  for key in want:
    assert got[key].dtype == want[key].dtype
    assert got[key].shape == want[key].shape
  assert not np.allclose(got["outputs"], want["outputs"])
  # Sparsity, measured on the model.keras the Pruner wrote.
  model = model_io.load_keras_model(pruned_dir)
  measured = model_stats.sparsity_stats(model)["sparsity"]
  assert abs(measured - TARGET_SPARSITY) <= 0.01, measured
  assert abs(pruned["sparsity"] - TARGET_SPARSITY) <= 0.01


def test_importing_us_first_leaves_the_trainer_on_keras3(tmp_path, module_file,
                                                          data):
  info = run_stage("import_first", tmp_path, module_file, data)
  assert info["tfx_compression"] is True
  assert info["legacy"] is None
  assert info["tf_keras_module"].startswith("keras")
  store = summary.open_store(str(tmp_path / "metadata.sqlite"))
  serving = model_io.serving_dir(artifact(store, "Trainer", "Model")["uri"])
  assert model_io.keras_file_version(
      os.path.join(serving, model_io.KERAS_FILENAME)).startswith("3.")
