"""Kubeflow runner --plan: the CompressionPlanner compiled in place of Pruner + Quantizer."""

import json

import pytest

from tfx_compression.pipelines import kubeflow_runner

IMAGE = "gcr.io/my-project/tfx-compression:0.1.0"
BASE = ["--image", IMAGE, "--pipeline-root", "gs://b/root", "--data-root",
        "gs://b/digits"]


def _needs_kfp():
  # Compiling needs kfp (the `kubeflow` extra), which `make test` installs and
  # the TFX 1.21 set of `make test-current` does not.
  pytest.importorskip("kfp", reason="compiling for Kubeflow needs the "
                      "`kubeflow` extra (pip install 'tfx-compression[kubeflow]')")


def _compile(tmp_path, *extra):
  out = tmp_path / "p.json"
  assert kubeflow_runner.main(BASE + ["--output", str(out), *extra]) == 0
  return json.loads(out.read_text())


def test_plan_compiles_the_planner_with_its_options_and_runtime_max_drop(
    tmp_path):
  _needs_kfp()
  job = _compile(tmp_path, "--plan", "--plan-structures", "channels,2:4",
                 "--plan-modes", "int8,float16", "--objective", "gzip_size",
                 "--search-sparsities", "0.5,0.8", "--prune-steps", "240",
                 "--max-drop", "0.02",
                 "--resources", "CompressionPlanner:cpu=8,memory=32")
  spec = job["pipelineSpec"]
  tasks = spec["root"]["dag"]["tasks"]
  assert "CompressionPlanner" in tasks
  assert not {"Pruner", "Quantizer"} & set(tasks)
  # The evaluator gates the planner's choice, and the Pusher follows the gate.
  assert tasks["CompressionEvaluator"]["inputs"]["artifacts"][
      "candidate_model"]["taskOutputArtifact"]["producerTask"] == (
          "CompressionPlanner")
  # Only the runtime parameters this pipeline reads, with their defaults.
  assert job["runtimeConfig"]["parameterValues"] == {
      "max_drop": 0.02, "train_args": '{"num_steps": 600}'}
  assert sorted(spec["root"]["inputDefinitions"]["parameters"]) == [
      "max_drop", "train_args"]
  params = tasks["CompressionPlanner"]["inputs"]["parameters"]
  assert params["max_drop"] == {"componentInputParameter": "max_drop"}
  constants = {k: v["runtimeValue"]["constant"] for k, v in params.items()
               if "runtimeValue" in v}
  assert constants["structures"] == "channels,2:4"
  assert constants["quantization_modes"] == "int8,float16"
  assert constants["objective"] == "gzip_size"
  assert constants["sparsities"] == "0.5,0.8"
  assert constants["search_steps"] == 120  # half of --prune-steps
  label = spec["components"][tasks["CompressionPlanner"]["componentRef"][
      "name"]]["executorLabel"]
  assert spec["deploymentSpec"]["executors"][label]["container"][
      "resources"] == {"cpuLimit": 8.0, "memoryLimit": 32.0}


def test_without_plan_the_fixed_pipeline_is_unchanged(tmp_path):
  _needs_kfp()
  job = _compile(tmp_path)
  tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
  assert {"Pruner", "Quantizer"} <= set(tasks)
  assert "CompressionPlanner" not in tasks
  assert sorted(job["runtimeConfig"]["parameterValues"]) == [
      "max_drop", "prune_steps", "target_sparsity", "train_args"]


@pytest.mark.parametrize("extra, needle", [
    (["--objective", "latency"], "--objective latency needs --plan"),
    (["--plan", "--plan-modes", "int8,int4"],
     "--plan-modes 'int8,int4': 'int4' is not one of int8, float16, dynamic, "
     "none"),
    (["--plan", "--plan-structures", "stripes"],
     "--plan-structures 'stripes': 'stripes' is not one of"),
    (["--plan", "--search-sparsities", "0.5,x"],
     "--search-sparsities '0.5,x': 'x' is not a number"),
])
def test_bad_plan_options_exit_2_naming_the_option(tmp_path, capsys, extra,
                                                   needle):
  with pytest.raises(SystemExit) as e:
    kubeflow_runner.main(BASE + ["--output", str(tmp_path / "p.json"), *extra])
  assert e.value.code == 2
  assert needle in capsys.readouterr().err
  assert not (tmp_path / "p.json").exists()


def test_planner_accepts_a_runtime_max_drop_and_still_checks_the_rest():
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx.types import channel_utils  # pylint: disable=g-import-not-at-top
  from tfx_compression import CompressionPlanner  # pylint: disable=g-import-not-at-top

  def channel(kind):
    return channel_utils.as_channel([kind()])

  inputs = dict(model=channel(standard_artifacts.Model),
                examples=channel(standard_artifacts.Examples),
                schema=channel(standard_artifacts.Schema), label_key="label")
  runtime = tfx.dsl.experimental.RuntimeParameter(
      name="max_drop", ptype=float, default=0.01)
  planner = CompressionPlanner(max_drop=runtime, **inputs)
  assert planner.exec_properties["max_drop"] is runtime
  with pytest.raises(ValueError, match=r"`search_steps`=0 must be >= 1"):
    CompressionPlanner(max_drop=runtime, search_steps=0, **inputs)
  # Without any threshold, known or not, the gate is still refused.
  with pytest.raises(ValueError, match=r"at least one of `max_drop`"):
    CompressionPlanner(**inputs)
