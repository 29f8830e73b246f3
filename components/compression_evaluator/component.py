"""The CompressionEvaluator component: the deployment gate of a compressed model.

It measures a compressed model (the candidate) against the model it came from
(the baseline) on the same evaluation examples, and writes a ModelBlessing the
way TFX's Evaluator does, so the stock Pusher pushes only candidates that pass:

    evaluator = CompressionEvaluator(
        baseline_model=trainer.outputs["model"],
        candidate_model=quantizer.outputs["quantized_model"],
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        label_key="label", metric="accuracy", max_drop=0.01,
        min_compression_ratio=3.0)
    pusher = tfx.components.Pusher(
        model=quantizer.outputs["quantized_model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=...)
"""

from typing import Any, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types.system_executions import Evaluate

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.compression_evaluator import config as config_lib
from tfx_compression.components.compression_evaluator import executor
# Channel and parameter names live in config.py (the executor uses them too).
from tfx_compression.components.compression_evaluator.config import (  # pylint: disable=g-multiple-import,g-importing-member
    BASELINE_MODEL_KEY, CANDIDATE_MODEL_KEY, EXAMPLES_KEY, SCHEMA_KEY,
    TRANSFORM_GRAPH_KEY, BASELINE_BLESSING_KEY, BLESSING_KEY, EVALUATION_KEY,
    LABEL_KEY_KEY, METRIC_KEY, MAX_DROP_KEY, MAX_RELATIVE_DROP_KEY,
    MIN_VALUE_KEY, MIN_COMPRESSION_RATIO_KEY, MAX_LATENCY_RATIO_KEY,
    EVAL_SPLIT_KEY, BATCH_SIZE_KEY, LATENCY_SAMPLES_KEY, TOP_K_KEY,
    COMPRESSION_MEASURE_KEY, MODULE_FILE_KEY, MIN_EXAMPLES_KEY,
    OUTPUT_KIND_KEY)


FLOAT_PARAMETERS = (MAX_DROP_KEY, MAX_RELATIVE_DROP_KEY, MIN_VALUE_KEY,
                    MIN_COMPRESSION_RATIO_KEY, MAX_LATENCY_RATIO_KEY)


class CompressionEvaluatorSpec(component_spec.ComponentSpec):
  """Inputs, outputs and parameters of the CompressionEvaluator."""

  PARAMETERS = {
      LABEL_KEY_KEY: component_spec.ExecutionParameter(type=str),
      METRIC_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      MAX_DROP_KEY: component_spec.ExecutionParameter(type=float, optional=True),
      MAX_RELATIVE_DROP_KEY: component_spec.ExecutionParameter(
          type=float, optional=True),
      MIN_VALUE_KEY: component_spec.ExecutionParameter(type=float, optional=True),
      MIN_COMPRESSION_RATIO_KEY: component_spec.ExecutionParameter(
          type=float, optional=True),
      MAX_LATENCY_RATIO_KEY: component_spec.ExecutionParameter(
          type=float, optional=True),
      EVAL_SPLIT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      BATCH_SIZE_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      LATENCY_SAMPLES_KEY: component_spec.ExecutionParameter(
          type=int, optional=True),
      TOP_K_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      COMPRESSION_MEASURE_KEY: component_spec.ExecutionParameter(
          type=str, optional=True),
      MODULE_FILE_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      MIN_EXAMPLES_KEY: component_spec.ExecutionParameter(
          type=int, optional=True),
      OUTPUT_KIND_KEY: component_spec.ExecutionParameter(
          type=str, optional=True),
  }
  INPUTS = {
      BASELINE_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model),
      CANDIDATE_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Model),
      EXAMPLES_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Examples),
      SCHEMA_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.Schema, optional=True),
      TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.TransformGraph, optional=True),
      BASELINE_BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing, optional=True),
  }
  OUTPUTS = {
      BLESSING_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelBlessing),
      EVALUATION_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ModelEvaluation),
  }
  TYPE_ANNOTATION = Evaluate


def _as_float(value: Any) -> Any:
  # TFX type-checks float parameters strictly; accept 1 for 1.0.
  if isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


class CompressionEvaluator(base_beam_component.BaseBeamComponent):
  """Blesses a compressed model only if it holds up against its baseline.

  Outputs:
    blessing: ModelBlessing with a BLESSED or NOT_BLESSED file and the custom
      property ``blessed`` (1/0), as TFX's Evaluator writes it.
    evaluation: ModelEvaluation holding report.json, report.md and
      report.html (with a size/metric plot).

  Both outputs carry the custom properties ``baseline_<metric>``,
  ``candidate_<metric>``, ``metric_drop``, ``size_ratio``,
  ``gzip_size_ratio``, ``latency_ratio``, ``sparsity``, ``blessed`` and
  ``reason``.
  """

  SPEC_CLASS = CompressionEvaluatorSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(
      self,
      baseline_model: types.BaseChannel,
      candidate_model: types.BaseChannel,
      examples: types.BaseChannel,
      schema: Optional[types.BaseChannel] = None,
      transform_graph: Optional[types.BaseChannel] = None,
      baseline_blessing: Optional[types.BaseChannel] = None,
      label_key: Union[str, Any] = None,
      metric: Union[str, Any] = "accuracy",
      max_drop: Optional[Union[float, Any]] = None,
      max_relative_drop: Optional[Union[float, Any]] = None,
      min_value: Optional[Union[float, Any]] = None,
      min_compression_ratio: Optional[Union[float, Any]] = None,
      max_latency_ratio: Optional[Union[float, Any]] = None,
      eval_split: Union[str, Any] = "eval",
      batch_size: Union[int, Any] = 256,
      latency_samples: Union[int, Any] = 200,
      top_k: Union[int, Any] = 5,
      compression_measure: Union[str, Any] = "raw",
      module_file: Optional[Union[str, Any]] = None,
      min_examples: Union[int, Any] = config_lib.DEFAULT_MIN_EXAMPLES,
      output_kind: Union[str, Any] = "auto"):
    """Builds the component; bad parameter values fail here.

    Args:
      baseline_model: the model the candidate was compressed from (the
        Trainer's Keras SavedModel).
      candidate_model: the compressed model: a Keras SavedModel (the Pruner's)
        or a TFLite model (the Quantizer's).
      examples: Examples with the evaluation split.
      schema: the Schema, to decode the raw Examples.
      transform_graph: optional TransformGraph; both models are then fed the
        transformed features.
      baseline_blessing: optional ModelBlessing of the baseline (e.g. a TFX
        Evaluator's). Once wired it is required: a baseline that was not
        blessed, a channel that resolves to no blessing at run time, or the
        blessing of another model makes the candidate NOT_BLESSED.
      label_key: the label's name in the raw Examples.
      metric: the gate metric: accuracy, precision, recall, f1, auc,
        top_k_accuracy or crossentropy (Keras names such as
        sparse_categorical_accuracy are accepted).
      max_drop: the largest allowed drop of the metric, in its units
        (0.01 = one accuracy point).
      max_relative_drop: the largest allowed drop as a fraction of the
        baseline's value.
      min_value: the least the candidate's metric may be.
      min_compression_ratio: the least baseline bytes / candidate bytes.
      max_latency_ratio: the most candidate latency / baseline latency.
      eval_split: the Examples split to evaluate on.
      batch_size: examples per prediction batch.
      latency_samples: examples timed per model (0 skips timing).
      top_k: the k of top_k_accuracy.
      compression_measure: 'raw' (bytes on disk) or 'gzip' bytes for
        min_compression_ratio.
      module_file: optional Python file defining ``custom_objects``.
      min_examples: the least number of evaluated examples to bless on
        (default 100); fewer gives NOT_BLESSED.
      output_kind: 'auto' (read from the baseline's loss and output layer),
        'probabilities' or 'logits': what the models' outputs are.
    """
    params = {
        LABEL_KEY_KEY: label_key,
        METRIC_KEY: metric,
        MAX_DROP_KEY: _as_float(max_drop),
        MAX_RELATIVE_DROP_KEY: _as_float(max_relative_drop),
        MIN_VALUE_KEY: _as_float(min_value),
        MIN_COMPRESSION_RATIO_KEY: _as_float(min_compression_ratio),
        MAX_LATENCY_RATIO_KEY: _as_float(max_latency_ratio),
        EVAL_SPLIT_KEY: eval_split,
        BATCH_SIZE_KEY: batch_size,
        LATENCY_SAMPLES_KEY: latency_samples,
        TOP_K_KEY: top_k,
        COMPRESSION_MEASURE_KEY: compression_measure,
        MODULE_FILE_KEY: module_file,
        MIN_EXAMPLES_KEY: min_examples,
        OUTPUT_KIND_KEY: output_kind,
    }
    concrete = artifacts.concrete(params)
    runtime = {k for k, v in params.items() if artifacts.is_placeholder(v)}
    if runtime <= set(thresholds_lib.STAND_INS):
      # Every parameter but runtime thresholds (Kubeflow's max_drop) is known
      # now: a valid stand-in for each of those lets all the other rules be
      # checked together, as the CompressionPlanner does; the executor checks
      # the real values.
      config_lib.EvaluatorConfig.from_parameters(
          {**concrete, **{k: thresholds_lib.STAND_INS[k] for k in runtime}})
    else:
      _check_known_parameters(concrete)
    spec = CompressionEvaluatorSpec(
        baseline_model=baseline_model,
        candidate_model=candidate_model,
        examples=examples,
        schema=schema,
        transform_graph=transform_graph,
        baseline_blessing=baseline_blessing,
        blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
        **params)
    super().__init__(spec=spec)


def _check_known_parameters(concrete):
  """Some parameters are runtime parameters: check what can be checked now."""
  if METRIC_KEY in concrete:
    thresholds_lib.canonical_metric(concrete[METRIC_KEY])
  for name in FLOAT_PARAMETERS:
    value = concrete.get(name)
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, (int, float))):
      raise TypeError(f"`{name}` must be a number or None, got "
                      f"{type(value).__name__} {value!r}.")
