"""The demo compiles for Kubeflow with its Keras 3 Trainer (offline, no cluster)."""

import json

import pytest

from tfx_compression.pipelines import kubeflow_runner

pytestmark = pytest.mark.e2e


def test_keras3_demo_compiles_with_the_keras3_trainer(tmp_path):
  json_path, _ = kubeflow_runner.compile_pipeline(
      "gcr.io/p/tfx-compression:0.1.0", "gs://b/root", "gs://b/digits",
      str(tmp_path / "digits.json"), keras=3)
  with open(json_path) as f:
    text = f.read()
  job = json.loads(text)
  assert "Trainer" in json.dumps(job["pipelineSpec"]["deploymentSpec"])
  assert "digits_trainer_keras3.run_fn" in text
  assert "digits_trainer.run_fn" not in text


def test_qat_with_keras3_is_refused_when_compiling(tmp_path):
  with pytest.raises(ValueError, match="quantization='int8'"):
    kubeflow_runner.compile_pipeline(
        "gcr.io/p/tfx-compression:0.1.0", "gs://b/root", "gs://b/digits",
        str(tmp_path / "digits.json"), keras=3, quantization="qat")
