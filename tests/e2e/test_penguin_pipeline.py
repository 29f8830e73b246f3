"""TFX's penguin pipeline (Transform, stock Evaluator) with compression appended.

Both gates are recorded in ML Metadata; the compressed model is pushed only when the
stock Evaluator blessed the Trainer's model and ours blessed the compressed one.
"""

import json
import os
import subprocess
import sys

import pytest

from tfx_compression.pipelines import summary

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "penguin_compression"


def run(out, *extra):
  cmd = [sys.executable, "-m", "tfx_compression.pipelines.penguin_pipeline", "--output-dir", str(out),
         "--train-steps", "200", *extra]
  # TFX's penguin module trains Keras 3: TF_USE_LEGACY_KERAS, which libraries
  # imported by the tests set in this process, must not reach the run.
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        timeout=1200, env=env)
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-2000:])
  return proc


def artifact(out, node, type_name):
  store = summary.open_store(str(out / "metadata.sqlite"))
  art = summary.latest_artifact(store, NAME, node, type_name)
  assert art is not None, f"no {type_name} from {node}"
  return {"uri": art.uri, **summary.artifact_properties(art)}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  return tmp_path_factory.mktemp("penguin")


@pytest.fixture(scope="module")
def first(out):
  return run(out)


def test_both_gates_bless_and_the_compressed_model_is_pushed(first, out):
  stock = artifact(out, "Evaluator", "ModelBlessing")
  ours = artifact(out, "CompressionEvaluator", "ModelBlessing")
  assert stock["blessed"] == 1
  assert ours["blessed"] == 1, ours
  pushed = artifact(out, "CompressedModelPusher", "PushedModel")
  assert pushed["pushed"] == 1
  assert os.path.isfile(os.path.join(pushed["pushed_destination"], "model.tflite"))
  # The stock Pusher of the user's pipeline still pushes the uncompressed model.
  stock_pushed = artifact(out, "Pusher", "PushedModel")
  assert os.path.isfile(os.path.join(stock_pushed["pushed_destination"],
                                     "saved_model.pb"))


def test_stock_evaluator_refusal_blocks_the_compressed_push(first, out):
  before = sorted(os.listdir(out / "serving_model_compressed"))
  run(out, "--accuracy-threshold", "1.01")
  stock = artifact(out, "Evaluator", "ModelBlessing")
  ours = artifact(out, "CompressionEvaluator", "ModelBlessing")
  assert stock["blessed"] == 0
  assert ours["blessed"] == 0
  evaluation = artifact(out, "CompressionEvaluator", "ModelEvaluation")
  with open(os.path.join(evaluation["uri"], "report.json")) as f:
    report = json.load(f)
  assert "the baseline model was not blessed" in json.dumps(report)
  pushed = artifact(out, "CompressedModelPusher", "PushedModel")
  assert pushed["pushed"] == 0
  assert sorted(os.listdir(out / "serving_model_compressed")) == before


def test_compiles_for_kubeflow(tmp_path):
  """The same penguin pipeline compiles for Kubeflow V2 with our components in it."""
  proc = subprocess.run(
      [sys.executable, "-m", "tfx_compression.pipelines.penguin_pipeline", "--output-dir",
       str(tmp_path), "--kubeflow-image", "gcr.io/p/tfx-compression:0.1.0",
       "--pipeline-root", "gs://bucket/root", "--data-root", "gs://bucket/penguin"],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  path = proc.stdout.strip().splitlines()[-1]
  with open(path) as f:
    job = json.load(f)
  from google.protobuf import json_format
  from kfp.pipeline_spec import pipeline_spec_pb2
  spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
  executors = json.dumps(job["pipelineSpec"]["deploymentSpec"])
  for name in ["tfx_compression.components.pruner.executor.Executor",
               "tfx_compression.components.quantizer.executor.Executor",
               "tfx_compression.components.compression_evaluator.executor.Executor",
               "tfx.components.evaluator.executor.Executor"]:
    assert name in executors, name
  images = {e["container"]["image"] for e in
            job["pipelineSpec"]["deploymentSpec"]["executors"].values()
            if "container" in e}
  assert images == {"gcr.io/p/tfx-compression:0.1.0"}
  assert "tfx_compression.pipelines.trainers.penguin_trainer.run_fn" in json.dumps(job)
  assert spec.root.dag.tasks  # parsed back with kfp's own proto
