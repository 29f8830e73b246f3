"""The CompressionEvaluator's executor: resolves artifacts, calls evaluate(), writes.

The blessing is written the way TFX's Evaluator writes it (an empty BLESSED or
NOT_BLESSED file in the artifact's directory, the custom property ``blessed``
1/0, ``candidate_model``/``candidate_model_id`` and ``baseline_model``/
``baseline_model_id``), so the stock Pusher honours it. It deliberately has no
``current_model_id``: that is what TFX's LatestBlessedModelStrategy resolves, and a
user's resolver for the stock Evaluator's baseline must never pick a compressed
model. It is written last,
after the report, so an error anywhere leaves no blessing at all.
"""

import json
import os
import tempfile
from typing import Any, Dict, List, Mapping, Optional

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_beam_executor

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import model_io
from tfx_compression.components.compression_evaluator import config as config_lib
from tfx_compression.components.compression_evaluator import evaluation as evaluation_lib
from tfx_compression.components.compression_evaluator import report as report_lib

# File and property names of TFX's Evaluator (tfx/components/evaluator/
# constants.py), which the Pusher reads through model_utils.is_model_blessed.
BLESSED_FILE_NAME = "BLESSED"
NOT_BLESSED_FILE_NAME = "NOT_BLESSED"
BLESSED_PROPERTY = "blessed"
TFLITE_IO_FILE_NAME = "tflite_io.json"
PRUNING_SEARCH_FILE_NAME = "pruning_search.json"


def _read_json(paths: List[str]) -> Optional[Dict[str, Any]]:
  """The first of ``paths`` that exists, parsed; None if none does."""
  for path in paths:
    if tf.io.gfile.exists(path):
      with tf.io.gfile.GFile(path) as f:
        try:
          return json.load(f)
        except json.JSONDecodeError as e:
          raise evaluation_lib.EvaluationError(
              f"{path} is not valid JSON ({e}); re-run the step that wrote "
              "it.") from e
  return None


def _custom_float(artifact: types.Artifact, name: str) -> Optional[float]:
  if not artifact.has_custom_property(name):
    return None
  value = artifact.get_custom_property(name)
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def output_properties(report: Mapping[str, Any]) -> Dict[str, Any]:
  """The custom properties both outputs carry (visible in ML Metadata)."""
  metric = report["metric"]
  sizes, latency = report["sizes"], report["latency"]
  return {
      "metric": metric,
      f"baseline_{metric}": report["metrics"]["baseline"][metric],
      f"candidate_{metric}": report["metrics"]["candidate"][metric],
      "metric_drop": report["metric_drop"],
      "size_ratio": sizes["size_ratio"],
      "gzip_size_ratio": sizes["gzip_size_ratio"],
      "latency_ratio": latency["latency_ratio"],
      "sparsity": report["sparsity"]["candidate"],
      "examples_count": report["examples"]["count"],
      BLESSED_PROPERTY: int(bool(report["blessed"])),
      "reason": report["verdict"],
  }


class Executor(base_beam_executor.BaseBeamExecutor):
  """Measures the candidate against the baseline; writes blessing and report."""

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
    baseline_blessing = artifacts.single(
        input_dict, config_lib.BASELINE_BLESSING_KEY, required=False)
    blessing = artifacts.single(output_dict, config_lib.BLESSING_KEY)
    evaluation = artifacts.single(output_dict, config_lib.EVALUATION_KEY)
    logging.info("CompressionEvaluator: candidate %s against baseline %s on "
                 "split '%s'; thresholds %s", candidate.uri, baseline.uri,
                 config.eval_split, config.thresholds.to_dict())

    candidate_dir = model_io.serving_dir(candidate.uri)
    tflite = model_io.find_tflite(candidate_dir)
    tflite_io = _read_json([os.path.join(os.path.dirname(tflite),
                                         TFLITE_IO_FILE_NAME)]) if tflite else None
    search = _read_json([os.path.join(d, PRUNING_SEARCH_FILE_NAME)
                         for d in (candidate.uri, candidate_dir)])
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
        pruning_search=search,
        work_dir=self._work_dir())

    with model_io.staged_output(evaluation.uri) as staging:
      for name, content in report_lib.render(result.report).items():
        with open(os.path.join(staging, name), "w", encoding="utf-8") as f:
          f.write(content)
    properties = output_properties(result.report)
    artifacts.set_properties(evaluation, properties)
    self._write_blessing(blessing, result.decision.blessed, baseline, candidate)
    artifacts.set_properties(blessing, properties)
    logging.info("CompressionEvaluator: %s Report: %s", result.decision.verdict,
                 os.path.join(evaluation.uri, report_lib.HTML_NAME))

  def _work_dir(self) -> str:
    """The execution's temp directory (shared with remote Beam workers), or a
    local one when the executor runs without a context (tests)."""
    try:
      base = self._get_tmp_dir()
    except RuntimeError:
      base = tempfile.mkdtemp(prefix="compression-evaluator-")
    path = os.path.join(base, "compression_evaluator")
    tf.io.gfile.makedirs(path)
    return path

  @staticmethod
  def _write_blessing(blessing: types.Artifact, blessed: bool,
                      baseline: types.Artifact,
                      candidate: types.Artifact) -> None:
    """BLESSED or NOT_BLESSED, as TFX's Evaluator writes it."""
    tf.io.gfile.makedirs(blessing.uri)
    for name in (BLESSED_FILE_NAME, NOT_BLESSED_FILE_NAME):
      stale = os.path.join(blessing.uri, name)
      if tf.io.gfile.exists(stale):
        tf.io.gfile.remove(stale)
    name = BLESSED_FILE_NAME if blessed else NOT_BLESSED_FILE_NAME
    with tf.io.gfile.GFile(os.path.join(blessing.uri, name), "w") as f:
      f.write("")
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
