"""The CompressionEvaluator's executor: resolves artifacts, calls evaluate(), writes.

The blessing is written the way TFX's Evaluator writes it (an empty BLESSED or
NOT_BLESSED file in the artifact's directory, the custom property ``blessed``
1/0, ``candidate_model``/``candidate_model_id`` and ``baseline_model``/
``baseline_model_id``), so the stock Pusher honours it. It deliberately has no
``current_model_id``: that is what TFX's LatestBlessedModelStrategy resolves, and a
user's resolver for the stock Evaluator's baseline must never pick a compressed
model.

Both outputs are staged: the report files and the blessing file are written in the
execution's temporary directory and copied into the output directories only at the
very end, report first and the blessing file last. An error, or a SIGKILL, anywhere
before that leaves no blessing and no report in the outputs.

A wired ``baseline_blessing`` is required: a channel that resolves to no artifact
at run time, or the blessing of another model than ``baseline_model``, gives
NOT_BLESSED with the reason.
"""

import copy
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags
from absl import logging
from apache_beam.options import pipeline_options
import tensorflow as tf
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_beam_executor

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import evaluation_report as report_types
from tfx_compression.components.common import model_io
from tfx_compression.components.common import side_files
from tfx_compression.components.compression_evaluator import config as config_lib
from tfx_compression.components.compression_evaluator import evaluation as evaluation_lib
from tfx_compression.components.compression_evaluator import report as report_lib

# File and property names of TFX's Evaluator (tfx/components/evaluator/
# constants.py), which the Pusher reads through model_utils.is_model_blessed.
BLESSED_FILE_NAME = "BLESSED"
NOT_BLESSED_FILE_NAME = "NOT_BLESSED"
BLESSED_PROPERTY = "blessed"

# Runners that run the job with this process's Python environment (the
# DirectRunner's processes, or our DaskRunner, which drops the option): the
# source package of TFX that BaseBeamExecutor builds for remote workers
# (--extra_package) is never installed by them.
_DIRECT_RUNNERS = ("DirectRunner", "BundleBasedDirectRunner",
                   "SwitchingDirectRunner")
_OWN_DASK_RUNNER = f"{__package__}.dask_runner.DaskRunner"


def runs_in_this_environment(beam_args: Sequence[str]) -> bool:
  """Whether ``beam_args`` pick a runner that needs no staged dependencies.

  Example: ``runs_in_this_environment(["--direct_num_workers=2"])`` is True;
  ``["--runner=DataflowRunner"]`` is False.
  """
  runner = pipeline_options.PipelineOptions(list(beam_args)).view_as(
      pipeline_options.StandardOptions).runner
  if runner is None:
    return True  # Beam's default, the DirectRunner
  return (str(runner).rsplit(".", 1)[-1] in _DIRECT_RUNNERS
          or str(runner) == _OWN_DASK_RUNNER)


def _custom_float(artifact: types.Artifact, name: str) -> Optional[float]:
  if not artifact.has_custom_property(name):
    return None
  value = artifact.get_custom_property(name)
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def _int_property(artifact: types.Artifact, name: str) -> int:
  if not artifact.has_custom_property(name):
    return 0
  try:
    return int(artifact.get_custom_property(name))
  except (TypeError, ValueError):
    return 0


def _str_property(artifact: types.Artifact, name: str) -> str:
  if not artifact.has_custom_property(name):
    return ""
  return str(artifact.get_custom_property(name) or "")


def baseline_blessing_problem(wired: bool,
                              blessing: Optional[types.Artifact],
                              baseline: types.Artifact) -> Optional[str]:
  """Why a wired ``baseline_blessing`` cannot vouch for ``baseline``, or None.

  A blessing names the model it blesses the way TFX's Evaluator writes it
  (``current_model_id`` / ``current_model``), or this component does
  (``candidate_model_id`` / ``candidate_model``). The ML Metadata ids are
  compared when both are known, else the URIs.

  Example:

      baseline_blessing_problem(True, None, baseline)  # '... resolved to no ...'
  """
  if not wired:
    return None
  if blessing is None:
    return ("`baseline_blessing` is wired but resolved to no blessing at run "
            "time (its producer was skipped or found nothing); a wired "
            "baseline gate is required")
  for id_key, uri_key in (("current_model_id", "current_model"),
                          ("candidate_model_id", "candidate_model")):
    blessed_id = _int_property(blessing, id_key)
    blessed_uri = _str_property(blessing, uri_key)
    if not blessed_id and not blessed_uri:
      continue
    if blessed_id and baseline.id:
      same = blessed_id == baseline.id
      shown = f"{id_key}={blessed_id}, baseline_model id {baseline.id}"
    elif blessed_uri:
      same = (os.path.normpath(blessed_uri.rstrip("/"))
              == os.path.normpath(baseline.uri.rstrip("/")))
      shown = f"{uri_key}={blessed_uri}, baseline_model {baseline.uri}"
    else:
      continue
    if same:
      return None
    return (f"`baseline_blessing` blesses another model than `baseline_model` "
            f"({shown})")
  return ("`baseline_blessing` does not say which model it blesses (no "
          "current_model_id or current_model property), so it cannot vouch "
          "for `baseline_model`")


def output_properties(report: report_types.EvaluationReport) -> Dict[str, Any]:
  """The custom properties both outputs carry (visible in ML Metadata)."""
  metric = report.metric
  return {
      "metric": metric,
      f"baseline_{metric}": report.metric_value("baseline"),
      f"candidate_{metric}": report.metric_value("candidate"),
      "metric_drop": report.metric_drop,
      "size_ratio": report.sizes.size_ratio,
      "gzip_size_ratio": report.sizes.gzip_size_ratio,
      "latency_ratio": report.latency.latency_ratio,
      "sparsity": report.sparsity.candidate,
      "examples_count": report.examples.count,
      BLESSED_PROPERTY: int(bool(report.blessed)),
      "reason": report.verdict,
  }


class Executor(base_beam_executor.BaseBeamExecutor):
  """Measures the candidate against the baseline; writes blessing and report."""

  def __init__(
      self,
      context: Optional[base_beam_executor.BaseBeamExecutor.Context] = None):
    # Given any beam args, BaseBeamExecutor builds and stages a source package
    # of TFX (make_beam_dependency_flags: ~2 s, and ~55 MB left in the temp
    # directory per execution) for remote workers. A runner that runs in this
    # environment never installs it, so the args are used as given: absl
    # flags among them are parsed as BaseBeamExecutor does, and its telemetry
    # --labels (for Dataflow) are left out. Other runners keep TFX's behaviour.
    local_args = None
    if (isinstance(context, base_beam_executor.BaseBeamExecutor.Context)
        and context.beam_pipeline_args
        and runs_in_this_environment(context.beam_pipeline_args)):
      local_args = list(context.beam_pipeline_args)
      context = copy.copy(context)
      context.beam_pipeline_args = []
    super().__init__(context)
    if local_args:
      self._beam_pipeline_args = local_args
      flags.FLAGS(sys.argv + local_args, known_only=True)

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    config = config_lib.EvaluatorConfig.from_parameters(exec_properties)
    baseline = artifacts.single(input_dict, config_lib.BASELINE_MODEL_KEY)
    candidate = artifacts.single(input_dict, config_lib.CANDIDATE_MODEL_KEY)
    examples = artifacts.single(input_dict, config_lib.EXAMPLES_KEY)
    schema = artifacts.read_schema(
        artifacts.single(input_dict, config_lib.SCHEMA_KEY, required=False))
    transform = artifacts.single(input_dict, config_lib.TRANSFORM_GRAPH_KEY,
                                 required=False)
    # Wired shows as the key being there, even when nothing resolved.
    blessing_wired = config_lib.BASELINE_BLESSING_KEY in input_dict
    baseline_blessing = artifacts.single(
        input_dict, config_lib.BASELINE_BLESSING_KEY, required=False)
    blessing = artifacts.single(output_dict, config_lib.BLESSING_KEY)
    evaluation = artifacts.single(output_dict, config_lib.EVALUATION_KEY)
    logging.info("CompressionEvaluator: candidate %s against baseline %s on "
                 "split '%s'; thresholds %s", candidate.uri, baseline.uri,
                 config.eval_split, config.thresholds.to_dict())

    work_dir, own_work_dir = self._work_dir()
    try:
      candidate_dir = model_io.serving_dir(candidate.uri)
      tflite = model_io.find_tflite(candidate_dir)
      try:
        tflite_io = side_files.read_tflite_io(tflite) if tflite else None
        search = side_files.read_pruning_search(
            candidate.uri,
            _str_property(candidate, side_files.SOURCE_MODEL_PROPERTY))
        plan = side_files.read_plan(candidate.uri)  # a CompressionPlanner's
      except side_files.SideFileError as e:
        raise evaluation_lib.EvaluationError(str(e)) from e
      result = evaluation_lib.evaluate(
          pipeline=self._make_beam_pipeline(),
          config=config,
          baseline_path=model_io.serving_dir(baseline.uri),
          candidate_path=candidate_dir,
          file_patterns=artifacts.split_patterns(examples, config.eval_split,
                                                 config_lib.EVAL_SPLIT_KEY),
          schema=schema,
          transform_dir=artifacts.transform_dir(transform),
          candidate_io=tflite_io,
          candidate_sparsity=_custom_float(candidate, "sparsity"),
          baseline_blessed=(model_utils.is_model_blessed(baseline_blessing)
                            if baseline_blessing is not None else None),
          baseline_blessing_problem=baseline_blessing_problem(
              blessing_wired, baseline_blessing, baseline),
          pruning_search=search,
          plan=plan,
          work_dir=work_dir)
      properties = output_properties(result.report)
      artifacts.set_properties(evaluation, properties)
      self._set_blessing_properties(blessing, result.decision.blessed,
                                    baseline, candidate)
      artifacts.set_properties(blessing, properties)
      _write_outputs(result, os.path.join(work_dir, "outputs"), blessing.uri,
                     evaluation.uri)
    finally:
      if own_work_dir:
        shutil.rmtree(os.path.dirname(work_dir), ignore_errors=True)
    logging.info("CompressionEvaluator: %s Report: %s", result.decision.verdict,
                 os.path.join(evaluation.uri, report_lib.HTML_NAME))

  def _work_dir(self) -> Tuple[str, bool]:
    """(scratch directory, whether this executor made it and must remove it).

    The execution's temp directory (shared with remote Beam workers; TFX
    removes it after the step, and it is not an output directory), or a
    local one when the executor runs without a context (tests)."""
    try:
      base, own = self._get_tmp_dir(), False
    except RuntimeError:
      base, own = tempfile.mkdtemp(prefix="compression-evaluator-"), True
    path = os.path.join(base, "compression_evaluator")
    tf.io.gfile.makedirs(path)
    return path, own

  @staticmethod
  def _set_blessing_properties(blessing: types.Artifact, blessed: bool,
                               baseline: types.Artifact,
                               candidate: types.Artifact) -> None:
    """The properties TFX's Evaluator writes on a blessing (the file is staged)."""
    blessing.set_int_custom_property(BLESSED_PROPERTY, int(blessed))
    # Not `current_model_id`: TFX's LatestBlessedModelStrategy keys on it, and
    # a user's resolver for the stock Evaluator's baseline (a Channel of every
    # Model in the pipeline) would then pick the compressed model, maybe a
    # TFLite file the stock Evaluator cannot load. The stock Pusher needs only
    # `blessed`.
    blessing.set_string_custom_property("candidate_model", candidate.uri)
    blessing.set_int_custom_property("candidate_model_id", candidate.id or 0)
    blessing.set_string_custom_property("baseline_model", baseline.uri)
    blessing.set_int_custom_property("baseline_model_id", baseline.id or 0)


def _commit(staged: str, final: str, stale: Sequence[str] = ()) -> None:
  """Copies the staged files into an output directory (local or remote).

  ``stale`` names files a previous attempt may have left there; they go
  first, so the directory never holds both BLESSED and NOT_BLESSED.
  """
  tf.io.gfile.makedirs(final)
  for name in stale:
    path = os.path.join(final, name)
    if tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  for name in sorted(tf.io.gfile.listdir(staged)):
    tf.io.gfile.copy(os.path.join(staged, name), os.path.join(final, name),
                     overwrite=True)


def _write_outputs(result: evaluation_lib.EvaluationResult, stage: str,
                   blessing_uri: str, evaluation_uri: str) -> None:
  """Writes report and blessing file in ``stage``, then commits them.

  Everything is written in the stage first; the output directories get the
  report, then the blessing file, in the last two steps of the execution.
  """
  report_stage = os.path.join(stage, "evaluation")
  blessing_stage = os.path.join(stage, "blessing")
  for d in (report_stage, blessing_stage):
    tf.io.gfile.makedirs(d)
  for name, content in report_lib.render(result.report).items():
    with tf.io.gfile.GFile(os.path.join(report_stage, name), "w") as f:
      f.write(content)
  name = (BLESSED_FILE_NAME if result.decision.blessed
          else NOT_BLESSED_FILE_NAME)
  with tf.io.gfile.GFile(os.path.join(blessing_stage, name), "w") as f:
    f.write("")
  _commit(report_stage, evaluation_uri)
  _commit(blessing_stage, blessing_uri,
          stale=(BLESSED_FILE_NAME, NOT_BLESSED_FILE_NAME))
