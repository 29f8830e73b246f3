"""The CompressionPlanner TFX component: spec, and a constructor that checks and wires."""

from typing import Any, Optional, Sequence, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.compression_planner import config as config_lib
from tfx_compression.components.compression_planner import executor

# Inputs and outputs (defined with the executor, which reads them).
MODEL_KEY = executor.MODEL_KEY
EXAMPLES_KEY = executor.EXAMPLES_KEY
SCHEMA_KEY = executor.SCHEMA_KEY
TRANSFORM_GRAPH_KEY = executor.TRANSFORM_GRAPH_KEY
COMPRESSED_MODEL_KEY = executor.COMPRESSED_MODEL_KEY
# Parameters: the same names as config.PlannerConfig's fields.
_FLOAT = ("max_drop", "max_relative_drop", "min_value", "learning_rate",
          "distillation_weight", "distillation_temperature")
_INT = ("search_steps", "finetune_steps", "pack_inputs",
        "num_representative_samples", "latency_samples", "batch_size", "seed")
_STR = ("label_key", "structures", "sparsities", "quantization_modes",
        "objective", "metric", "include_layers", "exclude_layers",
        "channel_ranking", "channel_norm", "train_split", "eval_split",
        "module_file")


class CompressionPlannerSpec(ComponentSpec):
  """CompressionPlanner spec. Parameters are int/float/str (RuntimeParameter-able)."""

  PARAMETERS = {
      **{k: ExecutionParameter(type=float, optional=True) for k in _FLOAT},
      **{k: ExecutionParameter(type=int, optional=True) for k in _INT},
      **{k: ExecutionParameter(type=str, optional=True) for k in _STR},
  }
  INPUTS = {
      MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema,
                                   optional=True),
      TRANSFORM_GRAPH_KEY: ChannelParameter(
          type=standard_artifacts.TransformGraph, optional=True),
  }
  OUTPUTS = {
      COMPRESSED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }


Number = Union[int, float, Any]  # Any: a RuntimeParameter or placeholder.
Items = Union[str, Sequence[Any]]


class CompressionPlanner(base_component.BaseComponent):
  """Searches pruning structures × sparsities × quantization modes; emits the
  best candidate within the gate.

  Each structure is climbed step by step (each step continuing from the last),
  each passing step's model converted once per mode, every candidate measured
  on the eval split through the runtime it ships in; the best passing one by
  ``objective`` is written, byte for byte as measured, in the Quantizer's
  layout (``Format-Serving/model.tflite``) or, for mode 'none', the Pruner's
  (a SavedModel), with ``plan.json`` beside it. The stock CompressionEvaluator
  gates it and the stock Pusher pushes it.

  Example:

      planner = CompressionPlanner(
          model=trainer.outputs["model"],
          examples=example_gen.outputs["examples"],
          schema=schema_gen.outputs["schema"],
          label_key="label", max_drop=0.005, objective="size")
      evaluator = CompressionEvaluator(
          candidate_model=planner.outputs["compressed_model"], ...)

  See components/compression_planner/README.md for every parameter.
  """

  SPEC_CLASS = CompressionPlannerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(
      self,
      model: types.BaseChannel,
      examples: types.BaseChannel,
      schema: Optional[types.BaseChannel] = None,
      transform_graph: Optional[types.BaseChannel] = None,
      label_key: Optional[str] = None,
      structures: Items = ",".join(config_lib.DEFAULT_STRUCTURES),
      sparsities: Items = ",".join(f"{s:g}" for s in
                                   config_lib.DEFAULT_SPARSITIES),
      search_steps: Number = 150,
      finetune_steps: Number = 100,
      quantization_modes: Items = ",".join(config_lib.DEFAULT_MODES),
      pack_inputs: Number = 1,
      num_representative_samples: Number = 200,
      objective: str = "size",
      latency_samples: Number = 100,
      metric: str = "accuracy",
      max_drop: Optional[Number] = None,
      max_relative_drop: Optional[Number] = None,
      min_value: Optional[Number] = None,
      include_layers: Items = "",
      exclude_layers: Items = "",
      channel_ranking: str = "per_layer",
      channel_norm: str = "l1",
      batch_size: Number = 32,
      learning_rate: Number = 1e-3,
      distillation_weight: Number = 0.0,
      distillation_temperature: Number = 2.0,
      seed: Number = 0,
      train_split: str = "train",
      eval_split: str = "eval",
      module_file: Optional[str] = None):
    """Checks the parameters (fails now, not at run time) and wires channels.

    Args:
      model: the Trainer's Model (a Keras SavedModel).
      examples: Examples with the train and eval splits.
      schema: the Schema (needed unless ``transform_graph`` is given).
      transform_graph: the Transform output, when the Trainer used Transform.
      label_key, structures, sparsities, search_steps, finetune_steps,
      quantization_modes, pack_inputs, num_representative_samples, objective,
      latency_samples, metric, max_drop, max_relative_drop, min_value,
      include_layers, exclude_layers, channel_ranking, channel_norm,
      batch_size, learning_rate, distillation_weight,
      distillation_temperature, seed, train_split, eval_split, module_file:
        see :class:`tfx_compression.components.compression_planner.config.PlannerConfig`.
        Lists may be given as lists or comma-separated strings.
    """
    params = dict(
        label_key=label_key, structures=_join(structures, "structures"),
        sparsities=_join(sparsities, "sparsities"),
        search_steps=search_steps,
        finetune_steps=finetune_steps,
        quantization_modes=_join(quantization_modes, "quantization_modes"),
        pack_inputs=pack_inputs,
        num_representative_samples=num_representative_samples,
        objective=objective, latency_samples=latency_samples, metric=metric,
        max_drop=max_drop, max_relative_drop=max_relative_drop,
        min_value=min_value,
        include_layers=_join(include_layers, "include_layers"),
        exclude_layers=_join(exclude_layers, "exclude_layers"),
        channel_ranking=channel_ranking, channel_norm=channel_norm,
        batch_size=batch_size, learning_rate=learning_rate,
        distillation_weight=distillation_weight,
        distillation_temperature=distillation_temperature, seed=seed,
        train_split=train_split, eval_split=eval_split,
        module_file=module_file)
    # Ints are valid floats: TFX checks the declared type strictly.
    for key in _FLOAT:
      if isinstance(params[key], int) and not isinstance(params[key], bool):
        params[key] = float(params[key])
    concrete = artifacts.concrete(params)
    # A gate threshold that is a RuntimeParameter (Kubeflow's max_drop) is
    # known only at run time, where the executor checks it; a valid stand-in
    # lets every other rule be checked now.
    runtime = [k for k in thresholds_lib.QUALITY_FIELDS
               if artifacts.is_placeholder(params.get(k))]
    config = config_lib.PlannerConfig.from_parameters(
        {**concrete, **{k: thresholds_lib.STAND_INS[k] for k in runtime}})
    if not artifacts.is_placeholder(label_key) and not artifacts.is_placeholder(
        module_file):
      config.check_data_inputs(schema is not None, transform_graph is not None)
    spec = CompressionPlannerSpec(
        model=model, examples=examples, schema=schema,
        transform_graph=transform_graph,
        compressed_model=types.Channel(type=standard_artifacts.Model),
        **params)
    super().__init__(spec=spec)


def _join(value, parameter: str):
  """A list as the comma-separated string the spec stores (str parameter)."""
  if artifacts.is_placeholder(value) or value is None or isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v)
                    for v in value)
  raise TypeError(f"`{parameter}` must be a comma-separated string or a "
                  f"list, got {type(value).__name__} {value!r}.")

