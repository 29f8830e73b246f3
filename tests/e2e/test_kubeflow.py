"""Kubeflow Pipelines v2: the compiled pipeline, the image, and a step run as a pod would.

No cluster: the pipeline is compiled with pipelines.kubeflow_runner, checked, loaded back
with kfp (and Vertex AI's SDK), and the Pruner then the Quantizer run through the very
command line of the compiled spec (TFX's Kubeflow V2 container entrypoint) in
subprocesses, with the ExecutorInput that Kubeflow's driver would hand them, on tiny
local data. The Quantizer takes its input from the Pruner's executor output metadata,
the file Kubeflow reads to pass artifacts between steps.
"""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Tuple

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from tfx_compression import CompressionEvaluator, Pruner, Quantizer
from tfx_compression.pipelines import kubeflow_runner
from tests import fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKERFILE = os.path.join(ROOT, "docker", "Dockerfile")
ENTRYPOINT = ["python", "-m",
              "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]

IMAGE = "gcr.io/my-project/tfx-compression:0.1.0"
PIPELINE_ROOT = "gs://my-bucket/tfx"
DATA_ROOT = "gs://my-bucket/digits"
# Compile-time defaults of the runtime parameters, all different from the runner's.
DEFAULTS = {"target_sparsity": 0.7, "max_drop": 0.02, "prune_steps": 250,
            "train_args": '{"num_steps": 400}'}
OURS = {"Pruner": Pruner, "Quantizer": Quantizer,
        "CompressionEvaluator": CompressionEvaluator}


def run_cli(argv: List[str]) -> Tuple[int, str, str]:
  """kubeflow_runner.main in-process: (exit code, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = kubeflow_runner.main(argv)
    except SystemExit as e:
      code = e.code
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """(job dict from the JSON, spec dict from the YAML, stdout, stderr, paths)."""
  out = tmp_path_factory.mktemp("kubeflow") / "pipeline.json"
  code, stdout, stderr = run_cli([
      "--image", IMAGE, "--pipeline-root", PIPELINE_ROOT, "--data-root",
      DATA_ROOT, "--output", str(out),
      "--target-sparsity", str(DEFAULTS["target_sparsity"]),
      "--max-drop", str(DEFAULTS["max_drop"]),
      "--prune-steps", str(DEFAULTS["prune_steps"]), "--train-steps", "400"])
  assert code == 0, stderr
  yaml_path = str(out)[:-len(".json")] + ".yaml"
  with open(out) as f:
    job = json.load(f)
  with open(yaml_path) as f:
    spec = yaml.safe_load(f)
  return dict(job=job, spec=spec, stdout=stdout, stderr=stderr,
              json_path=str(out), yaml_path=yaml_path)


def executors(spec) -> Dict[str, Dict[str, Any]]:
  """Task name -> its container (image, command, args)."""
  deployment = spec["deploymentSpec"]["executors"]
  result = {}
  for task, task_spec in spec["root"]["dag"]["tasks"].items():
    label = spec["components"][task_spec["componentRef"]["name"]]["executorLabel"]
    result[task] = deployment[label]["container"]
  return result


def executor_class_path(container) -> str:
  args = container["args"]
  return args[args.index("--executor_class_path") + 1]


def test_prints_both_paths_and_warns_about_nothing(compiled):
  assert compiled["stdout"].splitlines() == [compiled["json_path"],
                                             compiled["yaml_path"]]
  assert "WARNING" not in compiled["stderr"]
  # The YAML is the JSON's PipelineSpec, for Kubeflow Pipelines.
  assert compiled["spec"] == compiled["job"]["pipelineSpec"]


def test_names_our_three_executors(compiled):
  containers = executors(compiled["spec"])
  assert set(containers) == {"CsvExampleGen", "StatisticsGen", "SchemaGen",
                             "Trainer", "Pruner", "Quantizer",
                             "CompressionEvaluator", "Pusher"}
  for task, component in OURS.items():
    cls = component.EXECUTOR_SPEC.executor_class
    path = executor_class_path(containers[task])
    assert path == f"{cls.__module__}.{cls.__name__}"
    package = "compression_evaluator" if task == "CompressionEvaluator" else task.lower()
    assert path == f"tfx_compression.components.{package}.executor.Executor"


def test_every_step_runs_the_image_with_the_v2_entrypoint(compiled):
  for task, container in executors(compiled["spec"]).items():
    assert container["image"] == IMAGE, task
    assert container["command"] == ENTRYPOINT, task
    assert "{{$}}" in container["args"], task
  # The Trainer runs the demo module from the package installed in the image.
  trainer = compiled["spec"]["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
  assert trainer["run_fn"]["runtimeValue"]["constant"] == (
      "tfx_compression.pipelines.trainers.digits_trainer.run_fn")
  assert "module_file" not in trainer and "module_path" not in trainer


def test_runtime_parameters_with_their_defaults(compiled):
  spec, job = compiled["spec"], compiled["job"]
  inputs = spec["root"]["inputDefinitions"]["parameters"]
  types = {"target_sparsity": "NUMBER_DOUBLE", "max_drop": "NUMBER_DOUBLE",
           "prune_steps": "NUMBER_INTEGER", "train_args": "STRING"}
  assert {k: v["parameterType"] for k, v in inputs.items()} == types
  assert {k: v["defaultValue"] for k, v in inputs.items()} == DEFAULTS
  assert job["runtimeConfig"]["parameterValues"] == DEFAULTS
  assert job["runtimeConfig"]["gcsOutputDirectory"] == PIPELINE_ROOT
  assert spec["defaultPipelineRoot"] == PIPELINE_ROOT
  wired = {}
  for task, task_spec in spec["root"]["dag"]["tasks"].items():
    for name, value in task_spec["inputs"].get("parameters", {}).items():
      if "componentInputParameter" in value:
        wired[(task, name)] = value["componentInputParameter"]
  assert wired == {("Pruner", "target_sparsity"): "target_sparsity",
                   ("Pruner", "train_steps"): "prune_steps",
                   ("CompressionEvaluator", "max_drop"): "max_drop",
                   ("Trainer", "train_args"): "train_args"}
  # Compile-time values stay constants.
  tasks = spec["root"]["dag"]["tasks"]
  assert tasks["CsvExampleGen"]["inputs"]["parameters"]["input_base"] == {
      "runtimeValue": {"constant": DATA_ROOT}}
  pusher = tasks["Pusher"]["inputs"]["parameters"]["push_destination"]
  assert f"{PIPELINE_ROOT}/serving_model/digits-compression" in (
      pusher["runtimeValue"]["constant"])


def test_loads_back_with_kfp_and_vertex(compiled):
  # Strict proto parsing: an unknown or mistyped field fails.
  job = json_format.ParseDict(compiled["job"], pipeline_spec_pb2.PipelineJob())
  assert job.pipeline_spec["schemaVersion"] == "2.1.0"
  json_format.ParseDict(compiled["spec"], pipeline_spec_pb2.PipelineSpec())

  # What kfp.Client().create_run_from_pipeline_package does with the file.
  from kfp.client import client as kfp_client  # pylint: disable=g-import-not-at-top
  doc = kfp_client._extract_pipeline_yaml(compiled["yaml_path"])  # pylint: disable=protected-access
  assert doc.pipeline_spec.pipeline_info.name == "digits-compression"
  assert set(doc.pipeline_spec.root.dag.tasks) >= set(OURS)

  # kfp's own IR reader (kfp.components.load_component_from_file).
  from kfp import components as kfp_components  # pylint: disable=g-import-not-at-top
  loaded = kfp_components.load_component_from_file(compiled["yaml_path"])
  assert loaded.name == "digits-compression"
  assert {k: v.default for k, v in loaded.component_spec.inputs.items()} == DEFAULTS

  # How Vertex AI's SDK (aiplatform.PipelineJob) reads the JSON and overrides values.
  from google.cloud.aiplatform.utils import pipeline_utils  # pylint: disable=g-import-not-at-top
  builder = pipeline_utils.PipelineRuntimeConfigBuilder.from_job_spec_json(
      compiled["job"])
  builder.update_runtime_parameters({"target_sparsity": 0.5})
  values = builder.build()["parameterValues"]
  assert values == dict(DEFAULTS, target_sparsity=0.5)


@pytest.mark.parametrize("argv,needle", [
    (["--image", "", "--pipeline-root", PIPELINE_ROOT, "--data-root", DATA_ROOT],
     "--image (make: IMAGE) is empty"),
    (["--pipeline-root", PIPELINE_ROOT, "--data-root", DATA_ROOT],
     "--image (make: IMAGE) is empty"),
    (["--image", "gcr.io/my-project/tfx-compression", "--pipeline-root",
      PIPELINE_ROOT, "--data-root", DATA_ROOT],
     "--image 'gcr.io/my-project/tfx-compression' has no tag"),
    # A registry port is not a tag.
    (["--image", "localhost:5000/tfx-compression", "--pipeline-root",
      PIPELINE_ROOT, "--data-root", DATA_ROOT],
     "--image 'localhost:5000/tfx-compression' has no tag"),
    (["--image", "gcr.io/My Project/x:1", "--pipeline-root", PIPELINE_ROOT,
      "--data-root", DATA_ROOT], "is not a valid image name"),
    (["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT],
     "--data-root (make: DATA_ROOT) is missing"),
    (["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT, "--data-root", " "],
     "--data-root (make: DATA_ROOT) is missing"),
    (["--image", IMAGE, "--data-root", DATA_ROOT],
     "--pipeline-root (make: PIPELINE_ROOT) is missing"),
    (["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT, "--data-root",
      DATA_ROOT, "--pipeline-name", "digits_compression"],
     "--pipeline-name 'digits_compression' is not allowed"),
    (["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT, "--data-root",
      DATA_ROOT, "--train-steps", "0"], "--train-steps 0 must be >= 1"),
])
def test_bad_input_exits_2_naming_the_option(tmp_path, argv, needle):
  out = tmp_path / "p.json"
  code, stdout, stderr = run_cli(argv + ["--output", str(out)])
  assert code == 2
  assert needle in stderr
  assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
  assert stdout == "" and not out.exists()


@pytest.mark.parametrize("option,value,needle", [
    ("--target-sparsity", "1.5", "target_sparsity"),
    ("--quantization", "int4", "quantization"),
])
def test_bad_value_is_rejected_by_the_components_own_checks(tmp_path, option,
                                                            value, needle):
  """RuntimeParameters skip validation, so the defaults are checked as values."""
  out = tmp_path / "p.json"
  code, _, stderr = run_cli(["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT,
                             "--data-root", DATA_ROOT, option, value,
                             "--output", str(out)])
  assert code == 2 and needle in stderr and value in stderr
  assert stderr.startswith("error: ")
  assert not out.exists()


def test_evaluator_beam_args_reach_only_the_evaluators_container(tmp_path,
                                                                 compiled):
  out = tmp_path / "p.json"
  beam = ["--runner=DataflowRunner", "--project=p", "--region=europe-west4",
          "--temp_location=gs://my-bucket/tmp",
          "--sdk_container_image=" + IMAGE]
  code, _, stderr = run_cli(["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT,
                             "--data-root", DATA_ROOT, "--output", str(out),
                             "--evaluator-beam-args", " ".join(beam)])
  assert code == 0, stderr
  with open(out) as f:
    containers = executors(json.load(f)["pipelineSpec"])
  assert containers["CompressionEvaluator"]["args"][-len(beam):] == beam
  # Every other step's container is as without the option.
  default = executors(compiled["spec"])
  for task, container in containers.items():
    if task != "CompressionEvaluator":
      assert not any(a in container["args"] for a in beam), task
      assert container["args"] == default[task]["args"], task


@pytest.mark.parametrize("value,needle", [
    ("runner=DataflowRunner", "is not a --flag"),
    ("--project='p", "cannot be split"),
])
def test_bad_evaluator_beam_args_exit_2(tmp_path, value, needle):
  out = tmp_path / "p.json"
  code, _, stderr = run_cli(["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT,
                             "--data-root", DATA_ROOT, "--output", str(out),
                             f"--evaluator-beam-args={value}"])
  assert code == 2 and needle in stderr and stderr.startswith("error: ")
  assert "--evaluator-beam-args" in stderr
  assert not out.exists()


def test_local_pipeline_root_warns_but_compiles(tmp_path):
  out = tmp_path / "p.json"
  code, stdout, stderr = run_cli(["--image", IMAGE, "--pipeline-root",
                                  str(tmp_path / "root"), "--data-root", DATA_ROOT,
                                  "--output", str(out)])
  assert code == 0 and out.exists()
  warnings = [line for line in stderr.splitlines() if line.startswith("WARNING")]
  assert len(warnings) == 1
  assert f"--pipeline-root '{tmp_path / 'root'}' is a local path" in warnings[0]
  assert "gs://" in warnings[0]
  assert stdout.splitlines()[0] == str(out)
  assert not (tmp_path / "root").exists()  # compiling writes nothing there


def test_scheme_the_image_cannot_read_warns(tmp_path):
  out = tmp_path / "p.json"
  code, _, stderr = run_cli(["--image", IMAGE, "--pipeline-root", PIPELINE_ROOT,
                             "--data-root", "s3://my-bucket/digits",
                             "--output", str(out)])
  assert code == 0 and out.exists()
  (warning,) = [line for line in stderr.splitlines() if line.startswith("WARNING")]
  assert "--data-root 's3://my-bucket/digits'" in warning
  assert "only gs://" in warning


def test_help_names_the_options():
  code, stdout, _ = run_cli(["--help"])
  assert code == 0
  for option in ["--image", "--pipeline-root", "--data-root", "--output",
                 "--target-sparsity", "--max-drop", "--prune-steps",
                 "--train-steps", "--serving-model-dir", "--pipeline-name"]:
    assert option in stdout


# The image.


def dockerfile_env() -> Dict[str, str]:
  """The ENV values set by docker/Dockerfile (continuation lines joined)."""
  with open(DOCKERFILE) as f:
    text = re.sub(r"\\\n", " ", f.read())
  env = {}
  for line in text.splitlines():
    if line.startswith("ENV "):
      for item in shlex.split(line[len("ENV "):]):
        key, _, value = item.partition("=")
        env[key] = value
  return env


def pinned(name: str) -> str:
  with open(os.path.join(ROOT, "constraints.txt")) as f:
    for line in f:
      if line.lower().startswith(name + "=="):
        return line.strip().split("==")[1]
  raise AssertionError(f"{name} is not pinned in constraints.txt")


def test_dockerfile_matches_the_local_install():
  with open(DOCKERFILE) as f:
    text = f.read()
  # The base image is the TFX release the constraints pin.
  assert f"ARG BASE_IMAGE=tensorflow/tfx:{pinned('tfx')}\n" in text
  # Keras is not forced: Keras 3 models run in the image too.
  assert "TF_USE_LEGACY_KERAS" not in dockerfile_env()
  # On a base without TFX, one source of versions: constraints.txt, as locally.
  assert re.search(r"pip install [^\n]*--ignore-requires-python \\\n\s+-c "
                   r"/tmp/build/constraints\.txt \"/tmp/build\[kubeflow\]\"", text)
  # The pip the Makefile installs in the venv.
  with open(os.path.join(ROOT, "Makefile")) as f:
    assert re.search(r"^PIP_VERSION := \S+$", f.read(), re.M)
  assert "sed -n 's/^PIP_VERSION *:= *//p' /tmp/build/Makefile" in text
  # Every file the image copies exists, and the ignore file lets it through.
  with open(os.path.join(ROOT, "docker", "Dockerfile.dockerignore")) as f:
    allowed = {line[1:].rstrip("/\n") for line in f if line.startswith("!")}
  for line in text.splitlines():
    if line.startswith("COPY "):
      for source in line.split()[1:-1]:
        assert os.path.exists(os.path.join(ROOT, source)), source
        assert source in allowed, source


# A step run as Kubeflow runs it.


def _runtime_artifact(name: str, type_schema: Mapping[str, Any], uri: str,
                      metadata: Mapping[str, Any]) -> Dict[str, Any]:
  return {"name": name, "type": dict(type_schema), "uri": uri,
          "metadata": dict(metadata)}


def executor_input(spec, task: str, input_artifacts: Mapping[str, Dict[str, Any]],
                   runtime_values: Mapping[str, Any], root: str) -> Dict[str, Any]:
  """The ExecutorInput Kubeflow's driver builds for one task of the compiled spec.

  Parameters are the task's constants, and the run's values for the ones wired to
  runtime parameters. ``input_artifacts`` maps each input name to a RuntimeArtifact
  (uri and metadata) as an upstream step's executor output gave it.
  """
  task_spec = spec["root"]["dag"]["tasks"][task]
  component = spec["components"][task_spec["componentRef"]["name"]]
  parameters = {}
  for name, value in task_spec["inputs"].get("parameters", {}).items():
    if "componentInputParameter" in value:
      parameters[name] = runtime_values[value["componentInputParameter"]]
    else:
      parameters[name] = value["runtimeValue"]["constant"]
  assert set(input_artifacts) == set(task_spec["inputs"].get("artifacts", {}))
  inputs = {}
  for name, artifact in input_artifacts.items():
    type_schema = component["inputDefinitions"]["artifacts"][name]["artifactType"]
    inputs[name] = {"artifacts": [_runtime_artifact(
        artifact["name"], type_schema, artifact["uri"], artifact["metadata"])]}
  outputs = {}
  for name, definition in component["outputDefinitions"]["artifacts"].items():
    outputs[name] = {"artifacts": [_runtime_artifact(
        f"artifacts/{task}-{name}", definition["artifactType"],
        os.path.join(root, task, name), {})]}
  result = {"inputs": {"parameterValues": parameters, "artifacts": inputs},
            "outputs": {"artifacts": outputs,
                        "outputFile": os.path.join(root, task,
                                                   "executor_output.json")}}
  # The entrypoint parses it leniently: check here that it is a valid message.
  json_format.ParseDict(result, pipeline_spec_pb2.ExecutorInput())
  return result


def run_step(spec, task: str, invocation: Dict[str, Any], workdir: str):
  """Runs the task's container command line, as the pod would, in a subprocess."""
  container = executors(spec)[task]
  assert container["command"][0] == "python"
  # The image's `python` is the venv with this package installed; here it is the
  # test's interpreter, with the repo standing in for site-packages.
  command = [sys.executable] + container["command"][1:]
  args = [json.dumps(invocation) if a == "{{$}}" else a for a in container["args"]]
  assert not any("{{$" in a for a in args), args
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  for key, value in dockerfile_env().items():
    if key not in ("PATH", "VIRTUAL_ENV", "PYTHONPATH"):
      env[key] = value
  env["PYTHONPATH"] = ROOT
  env["CUDA_VISIBLE_DEVICES"] = ""
  return subprocess.run(command + args, cwd=workdir, env=env, capture_output=True,
                        text=True, timeout=600)


def read_executor_output(path: str) -> pipeline_spec_pb2.ExecutorOutput:
  with open(path) as f:
    return json_format.Parse(f.read(), pipeline_spec_pb2.ExecutorOutput())


def as_input(output: pipeline_spec_pb2.ExecutorOutput, key: str) -> Dict[str, Any]:
  """An upstream step's output artifact, as Kubeflow hands it to the next step."""
  (artifact,) = output.artifacts[key].artifacts
  return {"name": artifact.name, "uri": artifact.uri,
          "metadata": json_format.MessageToDict(artifact.metadata)}


@pytest.mark.e2e
def test_pruner_then_quantizer_through_the_kubeflow_entrypoint(
    compiled, tmp_path, model_artifact, schema_artifact):
  spec = compiled["spec"]
  # 300 digits (200 train, 100 eval) keep the two steps short.
  examples_artifact = fixtures.write_examples(str(tmp_path / "data"), limit=300)
  root = str(tmp_path / "pipeline_root")
  workdir = tmp_path / "pipeline"  # the image's empty WORKDIR
  workdir.mkdir()
  # The run overrides two runtime parameters, as a user would when submitting.
  run_values = dict(DEFAULTS, target_sparsity=0.5, prune_steps=20)
  upstream = {
      "model": {"name": "artifacts/Trainer-model", "uri": model_artifact.uri,
                "metadata": {}},
      "examples": {"name": "artifacts/CsvExampleGen-examples",
                   "uri": examples_artifact.uri,
                   "metadata": {"split_names": examples_artifact.split_names}},
      "schema": {"name": "artifacts/SchemaGen-schema", "uri": schema_artifact.uri,
                 "metadata": {}},
  }

  invocation = executor_input(spec, "Pruner", upstream, run_values, root)
  proc = run_step(spec, "Pruner", invocation, str(workdir))
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert "Executor tfx_compression.components.pruner.executor.Executor do" in proc.stderr

  # The executor output metadata Kubeflow reads: our artifacts, with their
  # custom properties, at the URIs it asked for.
  output = read_executor_output(invocation["outputs"]["outputFile"])
  assert set(output.artifacts) == {"pruned_model", "model_run"}
  pruned = as_input(output, "pruned_model")
  assert pruned["name"] == "artifacts/Pruner-pruned_model"
  assert pruned["uri"] == os.path.join(root, "Pruner", "pruned_model")
  assert pruned["metadata"]["target_sparsity"] == pytest.approx(0.5)
  assert pruned["metadata"]["sparsity"] == pytest.approx(0.5, abs=0.02)
  assert os.listdir(os.path.join(root, "Pruner", "model_run"))

  # The pruned SavedModel really is that sparse.
  from tfx_compression.components.common import model_io, model_stats  # pylint: disable=g-import-not-at-top
  model = model_io.load_keras_model(model_io.serving_dir(pruned["uri"]), "model")
  measured = model_stats.sparsity_stats(model)["sparsity"]
  assert measured == pytest.approx(pruned["metadata"]["sparsity"], abs=1e-6)

  # Next step: the Quantizer gets the Pruner's output as Kubeflow passes it on.
  upstream["model"] = pruned
  invocation = executor_input(spec, "Quantizer", upstream, run_values, root)
  proc = run_step(spec, "Quantizer", invocation, str(workdir))
  assert proc.returncode == 0, proc.stderr[-5000:]
  output = read_executor_output(invocation["outputs"]["outputFile"])
  quantized = as_input(output, "quantized_model")
  assert quantized["uri"] == os.path.join(root, "Quantizer", "quantized_model")
  assert quantized["metadata"]["quantization"] == "int8"
  assert quantized["metadata"]["input_sparsity"] == pytest.approx(
      pruned["metadata"]["sparsity"])
  tflite = model_io.find_tflite(model_io.serving_dir(quantized["uri"]))
  assert os.path.getsize(tflite) == quantized["metadata"]["tflite_bytes"]
  assert os.listdir(workdir) == []  # nothing written outside the pipeline root
