"""The Kubeflow image, run as Kubeflow runs it: Pruner, Quantizer, CompressionEvaluator.

The pipeline is compiled for the image; each of our three steps then runs inside the
built image (`buildah run`) with the command line of the compiled spec (TFX's Kubeflow
V2 container entrypoint) and the ExecutorInput Kubeflow's driver would give it, built
as tests/e2e/test_kubeflow.py builds it. The pipeline root is a host directory mounted
into the container; each step reads the previous step's executor output, as Kubeflow
passes artifacts on.

Runs when TFX_COMPRESSION_IMAGE names a built image (`make test-image` builds it and
sets it; needs root and buildah).
"""

import json
import os
import shutil
import subprocess

import pytest

IMAGE = os.environ.get("TFX_COMPRESSION_IMAGE", "")
if not IMAGE:
  # Before importing the Kubeflow helpers: kfp may be absent (TFX 1.21 on Python 3.13).
  pytest.skip("set TFX_COMPRESSION_IMAGE (make test-image)", allow_module_level=True)

from tests import fixtures  # noqa: E402
from tests.e2e import test_kubeflow as kf  # noqa: E402

BUILDAH_ROOT = os.environ.get("BUILDAH_ROOT",
                              "/var/cache/tfx-compression/containers")
MOUNT = "/mnt/pipeline"  # where the host directory appears in the container

pytestmark = pytest.mark.e2e


def buildah(*args, **kwargs):
  return subprocess.run(["buildah", "--storage-driver", "vfs", "--root", BUILDAH_ROOT,
                         *args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def container():
  proc = buildah("from", IMAGE, timeout=600)
  assert proc.returncode == 0, proc.stderr
  name = proc.stdout.strip().splitlines()[-1]
  yield name
  buildah("rm", name, timeout=300)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
  out = tmp_path_factory.mktemp("kubeflow") / "pipeline.json"
  code, _, stderr = kf.run_cli([
      "--image", IMAGE, "--pipeline-root", "gs://my-bucket/tfx", "--data-root",
      "gs://my-bucket/digits", "--output", str(out)])
  assert code == 0, stderr
  with open(out) as f:
    return json.load(f)["pipelineSpec"]


def run_in_image(container, spec, task, invocation, host_dir):
  """The task's container command line, inside the image, host_dir at MOUNT."""
  step = kf.executors(spec)[task]
  assert step["image"] == IMAGE
  args = [json.dumps(invocation) if a == "{{$}}" else a for a in step["args"]]
  return buildah("run", "--isolation", "chroot", "-v", f"{host_dir}:{MOUNT}",
                 "--workingdir", "/pipeline", container, "--",
                 *step["command"], *args, timeout=1200)


def to_host(uri: str, host_dir) -> str:
  assert uri.startswith(MOUNT + "/"), uri
  return os.path.join(str(host_dir), uri[len(MOUNT) + 1:])


def test_three_steps_run_in_the_image(container, spec, tmp_path, model_artifact,
                                      schema_artifact):
  host = tmp_path / "mounted"
  inputs = host / "inputs"
  # The upstream artifacts, where the container can read them.
  examples = fixtures.write_examples(str(inputs / "data"), limit=300)
  shutil.copytree(model_artifact.uri, inputs / "model")
  shutil.copytree(schema_artifact.uri, inputs / "schema")
  shutil.copytree(examples.uri, inputs / "examples")
  root = f"{MOUNT}/root"
  run_values = dict(kf.DEFAULTS, target_sparsity=0.5, prune_steps=20)
  trainer_model = {"name": "artifacts/Trainer-model", "uri": f"{MOUNT}/inputs/model",
                   "metadata": {}}
  upstream = {
      "model": trainer_model,
      "examples": {"name": "artifacts/CsvExampleGen-examples",
                   "uri": f"{MOUNT}/inputs/examples",
                   "metadata": {"split_names": examples.split_names}},
      "schema": {"name": "artifacts/SchemaGen-schema",
                 "uri": f"{MOUNT}/inputs/schema", "metadata": {}},
  }

  def run(task, artifacts):
    invocation = kf.executor_input(spec, task, artifacts, run_values, root)
    proc = run_in_image(container, spec, task, invocation, host)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "Executor tfx_compression.components." in proc.stderr
    return kf.read_executor_output(to_host(invocation["outputs"]["outputFile"], host))

  output = run("Pruner", upstream)
  pruned = kf.as_input(output, "pruned_model")
  assert pruned["uri"] == f"{root}/Pruner/pruned_model"
  assert pruned["metadata"]["sparsity"] == pytest.approx(0.5, abs=0.02)

  output = run("Quantizer", dict(upstream, model=pruned))
  quantized = kf.as_input(output, "quantized_model")
  assert quantized["metadata"]["quantization"] == "int8"
  assert quantized["metadata"]["input_sparsity"] == pytest.approx(
      pruned["metadata"]["sparsity"])
  assert quantized["metadata"]["tflite_bytes"] > 0

  output = run("CompressionEvaluator", {
      "baseline_model": trainer_model, "candidate_model": quantized,
      "examples": upstream["examples"], "schema": upstream["schema"]})
  blessing = kf.as_input(output, "blessing")
  assert blessing["uri"] == f"{root}/CompressionEvaluator/blessing"
  # The gate decided, and said so in the blessing it wrote into the mounted root.
  blessed = blessing["metadata"]["blessed"]
  assert blessed in (0, 1)
  marker = "BLESSED" if blessed == 1 else "NOT_BLESSED"
  assert os.path.exists(os.path.join(to_host(blessing["uri"], host), marker))
  evaluation = kf.as_input(output, "evaluation")
  assert os.listdir(to_host(evaluation["uri"], host))
