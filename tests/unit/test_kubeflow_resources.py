"""Kubeflow runner --resources: each step's own pod resources, compiled into its container spec."""

import json

import pytest

from tfx_compression.pipelines import kubeflow_runner
from tfx_compression.pipelines.kubeflow_runner import UsageError

IMAGE = "gcr.io/my-project/tfx-compression:0.1.0"


def test_parse_resources():
  assert kubeflow_runner.parse_resources([
      "Pruner:cpu=8,memory=32G,gpu=2,gpu_type=NVIDIA_TESLA_T4",
      "Quantizer: memory=16 ", "Trainer:cpu=0.5"]) == {
          "Pruner": {"cpu": 8.0, "memory": 32.0, "gpu": 2,
                     "gpu_type": "NVIDIA_TESLA_T4"},
          "Quantizer": {"memory": 16.0},
          "Trainer": {"cpu": 0.5}}
  assert kubeflow_runner.parse_resources(None) == {}


@pytest.mark.parametrize("value,match", [
    ("Pusher:cpu=2", r"'Pusher' is not one of \('Trainer', 'Pruner'"),
    ("Pruner", "sets nothing for Pruner"),
    ("Pruner:cpu=-1", r"cpu='-1' must be a number > 0"),
    ("Pruner:memory=lots", r"memory='lots' must be a number > 0"),
    ("Pruner:gpu=1.5,gpu_type=T4", r"gpu='1.5' must be a whole number > 0"),
    ("Pruner:gpu=1", "gpu and gpu_type go together"),
    ("Pruner:disk=10", r"'disk=10' is not cpu=N, memory=GB"),
])
def test_bad_resources_name_the_option_and_value(value, match):
  with pytest.raises(UsageError, match=match):
    kubeflow_runner.parse_resources([value])


def test_a_step_named_twice_is_refused():
  with pytest.raises(UsageError, match="names Pruner twice"):
    kubeflow_runner.parse_resources(["Pruner:cpu=1", "Pruner:memory=2"])


def _needs_kfp():
  # Compiling needs the `kubeflow` extra (kfp): installed by `make install`,
  # not in the TFX 1.21 set `make test-current` installs.
  pytest.importorskip("kfp", reason="compiling for Kubeflow needs the "
                      "`kubeflow` extra (pip install 'tfx-compression[kubeflow]')")


def test_compiled_pipeline_carries_the_pruners_resources(tmp_path):
  _needs_kfp()
  out = tmp_path / "p.json"
  assert kubeflow_runner.main([
      "--image", IMAGE, "--pipeline-root", "gs://b/root", "--data-root",
      "gs://b/digits", "--output", str(out),
      "--resources", "Pruner:cpu=8,memory=32,gpu=2,gpu_type=NVIDIA_TESLA_T4",
      "--resources", "Quantizer:cpu=2,memory=8"]) == 0
  spec = json.loads(out.read_text())["pipelineSpec"]
  containers = {}
  for task, task_spec in spec["root"]["dag"]["tasks"].items():
    label = spec["components"][task_spec["componentRef"]["name"]]["executorLabel"]
    containers[task] = spec["deploymentSpec"]["executors"][label]["container"]
  assert containers["Pruner"]["resources"] == {
      "cpuLimit": 8.0, "memoryLimit": 32.0,
      "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "2"}}
  assert containers["Quantizer"]["resources"] == {"cpuLimit": 2.0,
                                                  "memoryLimit": 8.0}
  # The other steps keep the cluster's defaults.
  assert "resources" not in containers["Trainer"]
  assert "resources" not in containers["CompressionEvaluator"]


def test_resources_for_a_step_the_pipeline_does_not_run(tmp_path, capsys):
  _needs_kfp()
  with pytest.raises(SystemExit) as e:
    kubeflow_runner.main([
        "--image", IMAGE, "--pipeline-root", "gs://b/root", "--data-root",
        "gs://b/digits", "--output", str(tmp_path / "p.json"),
        "--quantization", "none", "--resources", "Quantizer:cpu=2"])
  assert e.value.code == 2
  assert "--resources names Quantizer, which this pipeline does not run" in (
      capsys.readouterr().err)
