"""Compiles the demo pipeline for Kubeflow Pipelines v2 and Vertex AI Pipelines.

    python -m tfx_compression.pipelines.kubeflow_runner --image gcr.io/my-project/tfx-compression:0.1.0 \\
        --pipeline-root gs://my-bucket/tfx --data-root gs://my-bucket/digits

The same ``create_pipeline(...)`` as the local runner, compiled by TFX's
KubeflowV2DagRunner, with every step running in ``--image`` (built from docker/).
Nothing is uploaded or run: the command writes two files and prints their paths:

- ``<output>.json``: a PipelineJob, for Vertex AI Pipelines
  (``google.cloud.aiplatform.PipelineJob(template_path=...)``);
- ``<output>.yaml``: the same PipelineSpec as YAML, for Kubeflow Pipelines
  (``kfp.Client().create_run_from_pipeline_package(...)`` takes only YAML).

Runtime parameters, changeable per run without recompiling (the values given here
are their defaults): ``target_sparsity`` (float), ``max_drop`` (float, the
accuracy threshold), ``prune_steps`` (int, the Pruner's fine-tuning steps) and
``train_args`` (str, the Trainer's TrainArgs as JSON, e.g. ``{"num_steps": 600}``:
TFX passes protos as JSON strings, so the Trainer's steps cannot be a bare int).

Each step's pod can get its own resources with ``--resources STEP:cpu=N,memory=GB,gpu=N,gpu_type=TYPE``
(repeatable; STEP is Trainer, Pruner, Quantizer or CompressionEvaluator), compiled into
the step's container spec as TFX's ``with_platform_config`` does: e.g. ``--resources
Pruner:cpu=8,memory=32,gpu=2,gpu_type=NVIDIA_TESLA_T4``. The Pruner and the Quantizer's
QAT then fine-tune over the pod's GPUs (``distribution='auto'``: MirroredStrategy when
several are visible; the image must carry a GPU build of TensorFlow).

``--evaluator-beam-args "ARGS"`` gives Beam flags to the CompressionEvaluator's
job only (e.g. Dataflow's), compiled into its container's arguments.

The Trainer imports ``tfx_compression.pipelines.trainers.digits_trainer.run_fn`` from the package installed in
the image instead of packaging a module file: nothing is written to the pipeline
root at compile time, and the code that runs is the code in the image. ``--keras 3``
names ``digits_trainer_keras3.run_fn`` instead (the image sets no
``TF_USE_LEGACY_KERAS``, so either Keras trains there).
"""

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from tfx_compression.pipelines import local_runner
from tfx_compression.pipelines.local_runner import DEFAULTS as _LOCAL_DEFAULTS
# The option checks live in kubeflow_options; their names stay importable here.
from tfx_compression.pipelines.kubeflow_options import (  # pylint: disable=unused-import
    GFILE_SCHEMES, RESOURCE_STEPS, _RESOURCE_HELP, UsageError, check_image,  # noqa: F401
    check_uri, is_remote_uri, parse_resources, resource_spec, split_image)  # noqa: F401

# KFP v2 and Vertex AI accept only this pipeline name pattern (TFX checks it too).
PIPELINE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")
DEFAULT_PIPELINE_NAME = "digits-compression"
DEFAULT_OUTPUT_DIR = os.path.join("outputs", "kubeflow")
TRAINER_RUN_FN = "tfx_compression.pipelines.trainers.digits_trainer.run_fn"
# The Trainer's run_fn for each --keras (the same as pipeline.TRAINER_RUN_FNS,
# not imported from there so that --help needs no TensorFlow).
TRAINER_RUN_FNS = {
    2: TRAINER_RUN_FN,
    3: "tfx_compression.pipelines.trainers.digits_trainer_keras3.run_fn",
}

# Runtime parameter names, as they appear in the compiled spec and in a run's
# parameter values.
TARGET_SPARSITY = "target_sparsity"
MAX_DROP = "max_drop"
PRUNE_STEPS = "prune_steps"
TRAIN_ARGS = "train_args"
RUNTIME_PARAMETERS = (TARGET_SPARSITY, MAX_DROP, PRUNE_STEPS, TRAIN_ARGS)

class _Parser(argparse.ArgumentParser):
  """Errors on one line with exit code 2, like the local runner."""

  def error(self, message):
    self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
  """The command line (--help names every option).

  Nothing heavy is imported here, so that bad input fails at once; the values
  that TFX components check (e.g. --quantization) are checked when compiling.
  """
  p = _Parser(
      prog="python -m tfx_compression.pipelines.kubeflow_runner",
      description="Compile the digits compression pipeline for Kubeflow Pipelines "
                  "v2 / Vertex AI Pipelines. Writes <output>.json (a PipelineJob, "
                  "for Vertex AI) and <output>.yaml (the PipelineSpec, for "
                  "Kubeflow Pipelines) and prints their paths.",
      epilog="Runtime parameters (change them per run without recompiling; the "
             "values above are their defaults): target_sparsity, max_drop, "
             "prune_steps, train_args (JSON, e.g. '{\"num_steps\": 600}'); "
             "with --plan: max_drop and train_args.")
  p.add_argument("--image", default=None,
                 help="NAME:TAG of the image built from docker/, run by every "
                      "step (required)")
  p.add_argument("--pipeline-root", default=None,
                 help="where the steps write artifacts, a remote URI such as "
                      "gs://bucket/path (required)")
  p.add_argument("--data-root", default=None,
                 help="remote directory of CSV files (64 pixel columns and "
                      "`label`), CsvExampleGen's input (required)")
  p.add_argument("--serving-model-dir", default=None,
                 help="the Pusher's destination (default: "
                      "<pipeline-root>/serving_model/<pipeline-name>)")
  p.add_argument("--pipeline-name", default=DEFAULT_PIPELINE_NAME,
                 help="pipeline name, [a-z0-9][a-z0-9-]* (default: %(default)s)")
  p.add_argument("--output", default=None,
                 help="path of the JSON to write; the YAML goes beside it "
                      f"(default: {DEFAULT_OUTPUT_DIR}/<pipeline-name>.json)")
  p.add_argument("--target-sparsity", type=float,
                 default=_LOCAL_DEFAULTS["target_sparsity"],
                 help="runtime parameter target_sparsity: fraction of weights to "
                      "remove, in [0, 1) (default: %(default)s)")
  p.add_argument("--max-drop", type=float, default=_LOCAL_DEFAULTS["max_drop"],
                 help="runtime parameter max_drop: accuracy threshold, the largest "
                      "allowed accuracy drop, 0.01 = one point "
                      "(default: %(default)s)")
  p.add_argument("--prune-steps", type=int, default=_LOCAL_DEFAULTS["prune_steps"],
                 help="runtime parameter prune_steps: Pruner fine-tuning steps "
                      "(default: %(default)s)")
  p.add_argument("--train-steps", type=int, default=_LOCAL_DEFAULTS["train_steps"],
                 help="Trainer steps, compiled as the default of runtime parameter "
                      "train_args='{\"num_steps\": N}' (default: %(default)s)")
  p.add_argument("--sparsity-structure",
                 default=_LOCAL_DEFAULTS["sparsity_structure"],
                 help="unstructured, an M:N block such as 2:4, or channels "
                      "(default: %(default)s)")
  p.add_argument("--quantization", default=_LOCAL_DEFAULTS["quantization"],
                 help="Quantizer mode (dynamic, float16, int8, int16x8, qat), or "
                      "none to gate the pruned SavedModel (default: %(default)s)")
  p.add_argument("--plan", action="store_true",
                 help="a CompressionPlanner searches structure, sparsity and "
                      "quantization within --max-drop instead of one fixed "
                      "Pruner + Quantizer (runtime parameters: max_drop and "
                      "train_args; half of --prune-steps fine-tunes each step)")
  local_runner.add_plan_options(p)
  p.add_argument("--search-sparsities", default=None,
                 help="comma-separated sparsities to try step by step: the "
                      "Pruner keeps the sparsest that passes the gate; with "
                      "--plan, each structure climbs them (default there: "
                      "0.5,0.7,0.8,0.85,0.9)")
  p.add_argument("--keras", type=int, choices=(2, 3), default=2,
                 help="train the demo CNN with tf_keras (2) or Keras 3 (3); the "
                      "image runs both (default: %(default)s)")
  p.add_argument("--resources", action="append", default=None,
                 metavar="STEP:KEY=VALUE,...",
                 help="a step's own pod resources, repeatable: "
                      f"{_RESOURCE_HELP} (STEP: {', '.join(RESOURCE_STEPS)}; "
                      "memory in GB)")
  p.add_argument("--evaluator-beam-args", default=None, metavar='"ARGS"',
                 help="Beam pipeline arguments for the CompressionEvaluator's job "
                      "only, in one quoted string, e.g. \"--runner=DataflowRunner "
                      "--project=P --region=R --temp_location=gs://B/tmp "
                      "--sdk_container_image=IMAGE\" (the evaluator README lists "
                      "Dataflow, Flink and Spark's); the other steps run Beam's "
                      "DirectRunner in their pods")
  p.add_argument("--no-cache", action="store_true",
                 help="compile with step caching off")
  return p


def runtime_parameters(target_sparsity: float, max_drop: float, prune_steps: int,
                       train_steps: int) -> Dict[str, Any]:
  """The RuntimeParameters wired into create_pipeline, keyed by name.

  Example:
    >>> params = runtime_parameters(0.8, 0.01, 300, 600)
    >>> params["train_args"].default
    '{"num_steps": 600}'
  """
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  param = tfx.dsl.experimental.RuntimeParameter
  return {
      TARGET_SPARSITY: param(name=TARGET_SPARSITY, ptype=float,
                             default=float(target_sparsity)),
      MAX_DROP: param(name=MAX_DROP, ptype=float, default=float(max_drop)),
      PRUNE_STEPS: param(name=PRUNE_STEPS, ptype=int, default=int(prune_steps)),
      # TFX hands protos to executors as JSON strings; a str parameter is the
      # documented way to make TrainArgs a runtime parameter.
      TRAIN_ARGS: param(name=TRAIN_ARGS, ptype=str,
                        default='{"num_steps": %d}' % int(train_steps)),
  }


def _add_defaults(pipeline_spec: Dict[str, Any], params: Dict[str, Any]) -> None:
  """Writes each runtime parameter's default into the spec's root inputs.

  TFX puts the values only into the PipelineJob's runtimeConfig, which Kubeflow
  Pipelines does not read: with the defaults in the spec, a run needs no
  arguments, and any of them can still be overridden.
  """
  inputs = pipeline_spec["root"]["inputDefinitions"]["parameters"]
  for name, param in params.items():
    inputs[name]["defaultValue"] = param.default
    inputs[name]["isOptional"] = True
    inputs[name]["description"] = _DESCRIPTIONS[name]


_DESCRIPTIONS = {
    TARGET_SPARSITY: "Pruner: fraction of weights to remove, in [0, 1).",
    MAX_DROP: "Gate: largest allowed accuracy drop (0.01 = one point).",
    PRUNE_STEPS: "Pruner: fine-tuning steps.",
    TRAIN_ARGS: 'Trainer: TrainArgs as JSON, e.g. {"num_steps": 600}.',
}


def compile_pipeline(image: str, pipeline_root: str, data_root: str,
                     output_path: str, pipeline_name: str = DEFAULT_PIPELINE_NAME,
                     serving_model_dir: Optional[str] = None,
                     target_sparsity: float = _LOCAL_DEFAULTS["target_sparsity"],
                     max_drop: float = _LOCAL_DEFAULTS["max_drop"],
                     prune_steps: int = _LOCAL_DEFAULTS["prune_steps"],
                     train_steps: int = _LOCAL_DEFAULTS["train_steps"],
                     sparsity_structure: str = _LOCAL_DEFAULTS["sparsity_structure"],
                     quantization: str = _LOCAL_DEFAULTS["quantization"],
                     enable_cache: bool = True,
                     keras: int = 2,
                     resources: Optional[Dict[str, Dict[str, Any]]] = None,
                     search_sparsities: Optional[str] = None,
                     plan: bool = False, objective: str = "size",
                     planner_kwargs: Optional[Dict[str, Any]] = None,
                     evaluator_beam_args: Optional[List[str]] = None
                     ) -> Tuple[str, str]:
  """Compiles the demo pipeline; returns the paths of the JSON and the YAML written.

  Values are not checked for remoteness here (see ``main``); the numbers are
  checked by the components' own configs, with the message naming the parameter.
  ``resources``: step -> its pod's resources, as :func:`parse_resources` gives.
  ``plan``: a CompressionPlanner instead of the Pruner and Quantizer (with
  ``objective`` and ``planner_kwargs``); its runtime parameters are max_drop
  and train_args only (it has no target sparsity, and its search steps are
  half of ``prune_steps``, fixed when compiling). ``evaluator_beam_args``:
  Beam flags for the CompressionEvaluator's job only (its pod runs the
  launcher; e.g. Dataflow's).

  Example:
    json_path, yaml_path = compile_pipeline(
        "gcr.io/p/tfx-compression:0.1.0", "gs://b/root", "gs://b/digits",
        "outputs/kubeflow/digits-compression.json")
  """
  import json  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  from tfx_compression.pipelines import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner  # pylint: disable=g-import-not-at-top

  serving_model_dir = serving_model_dir or "/".join(
      [pipeline_root.rstrip("/"), "serving_model", pipeline_name])
  common = dict(pipeline_name=pipeline_name, pipeline_root=pipeline_root,
                data_root=data_root, serving_model_dir=serving_model_dir,
                sparsity_structure=sparsity_structure, quantization=quantization,
                enable_cache=enable_cache, keras=keras,
                trainer_run_fn=TRAINER_RUN_FNS.get(keras, TRAINER_RUN_FN),
                search_sparsities=None if plan else search_sparsities,
                plan=plan, objective=objective,
                planner_kwargs=({**(planner_kwargs or {}),
                                 "sparsities": search_sparsities}
                                if plan and search_sparsities
                                else planner_kwargs))
  # The components skip RuntimeParameters when validating, so build the pipeline
  # once with the defaults as plain values: a bad default fails here, by name.
  pipeline_lib.create_pipeline(target_sparsity=target_sparsity, max_drop=max_drop,
                               prune_steps=prune_steps, train_steps=train_steps,
                               **common)
  params = runtime_parameters(target_sparsity, max_drop, prune_steps, train_steps)
  if plan:  # Only the parameters the planner's pipeline reads.
    params = {k: v for k, v in params.items() if k in (MAX_DROP, TRAIN_ARGS)}
  pipe = pipeline_lib.create_pipeline(
      target_sparsity=params.get(TARGET_SPARSITY, target_sparsity),
      max_drop=params[MAX_DROP],
      prune_steps=params.get(PRUNE_STEPS, prune_steps),
      train_args=params[TRAIN_ARGS], **common)
  _set_resources(pipe, resources or {})
  for node in pipe.components:
    if evaluator_beam_args and node.id == "CompressionEvaluator":
      node.with_beam_pipeline_args(list(evaluator_beam_args))
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
          default_image=image, use_pipeline_spec_2_1=True))
  job = runner.run(pipe, parameter_values={k: p.default for k, p in params.items()},
                   write_out=False)
  _add_defaults(job["pipelineSpec"], params)
  # TFX sets the root only in the PipelineJob's runtimeConfig; Kubeflow Pipelines
  # reads the spec's own default (Vertex AI reads either).
  job["pipelineSpec"]["defaultPipelineRoot"] = pipeline_root
  # TFX writes every number as a double (300.0); keep each value's own type.
  job["runtimeConfig"]["parameterValues"] = {k: p.default
                                             for k, p in params.items()}

  json_path = output_path
  yaml_path = os.path.splitext(output_path)[0] + ".yaml"
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
  with open(json_path, "w") as f:
    json.dump(job, f, indent=2, sort_keys=True)
  with open(yaml_path, "w") as f:
    yaml.safe_dump(job["pipelineSpec"], f, sort_keys=True)
  return json_path, yaml_path


def _set_resources(pipe, resources: Dict[str, Dict[str, Any]]) -> None:
  by_id = {component.id: component for component in pipe.components}
  for step, values in resources.items():
    if step not in by_id:
      raise UsageError(f"--resources names {step}, which this pipeline does not "
                       f"run (its steps: {sorted(by_id)}).")
    by_id[step].with_platform_config(resource_spec(values))


def _check_plan(args) -> Optional[Dict[str, Any]]:
  """--plan and its options, checked as the local runner checks them (exit 2).

  Returns the CompressionPlanner's extra parameters (None without --plan).
  """
  # pylint: disable=protected-access
  if args.search_sparsities is not None:
    local_runner._check_search_sparsities(args.search_sparsities)
  as_local = argparse.Namespace(**vars(args), pack_inputs=0,
                                int8_io="float32", distillation_weight=None,
                                distillation_temperature=None)
  local_runner._check_plan(as_local)
  if not args.plan:
    return None
  kwargs = local_runner._planner_kwargs(as_local) or {}
  kwargs.pop("sparsities", None)  # compile_pipeline passes them
  return kwargs or None


def main(argv: Optional[List[str]] = None) -> int:
  """Command-line entry: exit 0 with the paths on stdout, 2 on bad input."""
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    image = check_image(args.image)
    pipeline_root, root_warning = check_uri(
        args.pipeline_root, "--pipeline-root", "PIPELINE_ROOT",
        "the pipeline root (where the steps write artifacts)")
    data_root, data_warning = check_uri(
        args.data_root, "--data-root", "DATA_ROOT",
        "the data location (a directory of CSV files)")
    if not PIPELINE_NAME_RE.fullmatch(args.pipeline_name):
      raise UsageError(
          f"--pipeline-name {args.pipeline_name!r} is not allowed by Kubeflow "
          "Pipelines v2: use lowercase letters, digits and '-', starting with a "
          "letter or digit, e.g. digits-compression.")
    for option, value in (("--train-steps", args.train_steps),
                          ("--prune-steps", args.prune_steps)):
      if value < 1:
        raise UsageError(f"{option} {value} must be >= 1.")
    resources = parse_resources(args.resources)
    planner_kwargs = _check_plan(args)
    beam_args = (None if args.evaluator_beam_args is None else
                 local_runner.evaluator_beam_args(args.evaluator_beam_args))
    serving_warning = None
    if args.serving_model_dir is not None:
      args.serving_model_dir, serving_warning = check_uri(
          args.serving_model_dir, "--serving-model-dir", None,
          "the Pusher's destination")
  except UsageError as e:
    parser.error(str(e))
  for warning in (root_warning, data_warning, serving_warning):
    if warning:
      sys.stderr.write(f"WARNING: {warning}\n")
  if image.endswith(":latest"):
    sys.stderr.write(
        f"WARNING: --image {image!r} uses the tag 'latest', which moves: steps of "
        "one run may pull different images. Prefer a version tag.\n")
  output = args.output or os.path.join(DEFAULT_OUTPUT_DIR,
                                       f"{args.pipeline_name}.json")
  if not output.endswith(".json"):
    parser.error(f"--output {output!r} must end with .json (the YAML is written "
                 "beside it).")
  try:
    json_path, yaml_path = compile_pipeline(
        image=image, pipeline_root=pipeline_root, data_root=data_root,
        output_path=output, pipeline_name=args.pipeline_name,
        serving_model_dir=args.serving_model_dir,
        target_sparsity=args.target_sparsity, max_drop=args.max_drop,
        prune_steps=args.prune_steps, train_steps=args.train_steps,
        sparsity_structure=args.sparsity_structure,
        quantization=args.quantization, enable_cache=not args.no_cache,
        keras=args.keras, resources=resources,
        search_sparsities=args.search_sparsities, plan=args.plan,
        objective=args.objective or "size", planner_kwargs=planner_kwargs,
        evaluator_beam_args=beam_args)
  except (ValueError, TypeError) as e:
    parser.error(str(e))
  print(json_path)
  print(yaml_path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
