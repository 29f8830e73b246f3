"""The Pruner TFX component: spec, and a constructor that checks and wires."""

from typing import Any, Optional, Sequence, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from tfx_compression.components.common import artifacts
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import executor

# Inputs and outputs (defined with the executor, which reads them).
MODEL_KEY = executor.MODEL_KEY
EXAMPLES_KEY = executor.EXAMPLES_KEY
SCHEMA_KEY = executor.SCHEMA_KEY
TRANSFORM_GRAPH_KEY = executor.TRANSFORM_GRAPH_KEY
PRUNED_MODEL_KEY = executor.PRUNED_MODEL_KEY
MODEL_RUN_KEY = executor.MODEL_RUN_KEY
# Parameters (the same names as config.PrunerConfig's fields).
LABEL_KEY_KEY = "label_key"
TARGET_SPARSITY_KEY = "target_sparsity"
INITIAL_SPARSITY_KEY = "initial_sparsity"
SCHEDULE_KEY = "schedule"
BEGIN_STEP_KEY = "begin_step"
END_STEP_KEY = "end_step"
FREQUENCY_KEY = "frequency"
SPARSITY_STRUCTURE_KEY = "sparsity_structure"
INCLUDE_LAYERS_KEY = "include_layers"
EXCLUDE_LAYERS_KEY = "exclude_layers"
CHANNEL_RANKING_KEY = "channel_ranking"
CHANNEL_NORM_KEY = "channel_norm"
FINETUNE_STEPS_KEY = "finetune_steps"
TRAIN_STEPS_KEY = "train_steps"
EPOCHS_KEY = "epochs"
BATCH_SIZE_KEY = "batch_size"
LEARNING_RATE_KEY = "learning_rate"
SEED_KEY = "seed"
TRAIN_SPLIT_KEY = "train_split"
EVAL_SPLIT_KEY = "eval_split"
MODULE_FILE_KEY = "module_file"
SEARCH_SPARSITIES_KEY = "search_sparsities"
SEARCH_STEPS_KEY = "search_steps"
METRIC_KEY = "metric"
MAX_DROP_KEY = "max_drop"
MAX_RELATIVE_DROP_KEY = "max_relative_drop"
MIN_VALUE_KEY = "min_value"
DISTILLATION_WEIGHT_KEY = "distillation_weight"
DISTILLATION_TEMPERATURE_KEY = "distillation_temperature"
DISTRIBUTION_KEY = "distribution"

_FLOAT = (TARGET_SPARSITY_KEY, INITIAL_SPARSITY_KEY, LEARNING_RATE_KEY,
          MAX_DROP_KEY, MAX_RELATIVE_DROP_KEY, MIN_VALUE_KEY,
          DISTILLATION_WEIGHT_KEY, DISTILLATION_TEMPERATURE_KEY)
_INT = (BEGIN_STEP_KEY, END_STEP_KEY, FREQUENCY_KEY, FINETUNE_STEPS_KEY,
        TRAIN_STEPS_KEY, EPOCHS_KEY, BATCH_SIZE_KEY, SEED_KEY, SEARCH_STEPS_KEY)
_STR = (LABEL_KEY_KEY, SCHEDULE_KEY, SPARSITY_STRUCTURE_KEY, INCLUDE_LAYERS_KEY,
        EXCLUDE_LAYERS_KEY, CHANNEL_RANKING_KEY, CHANNEL_NORM_KEY,
        TRAIN_SPLIT_KEY, EVAL_SPLIT_KEY, MODULE_FILE_KEY, SEARCH_SPARSITIES_KEY,
        METRIC_KEY, DISTRIBUTION_KEY)


class PrunerSpec(ComponentSpec):
  """Pruner component spec. Parameters are int/float/str (RuntimeParameter-able)."""

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
      PRUNED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
  }


Number = Union[int, float, Any]  # Any: a RuntimeParameter or placeholder.


class Pruner(base_component.BaseComponent):
  """Fine-tunes the Trainer's model with tfmot pruning and emits it stripped.

  The pruned SavedModel has the input's serving signatures (same names and
  specs) in the Trainer's ``Format-Serving`` layout, so the stock Evaluator,
  Pusher and resolvers take it unchanged, and it loads without tfmot.

  Example:

      pruner = Pruner(
          model=trainer.outputs["model"],
          examples=example_gen.outputs["examples"],
          schema=schema_gen.outputs["schema"],
          label_key="label",
          target_sparsity=0.8,
          train_steps=300)
      pusher = Pusher(model=pruner.outputs["pruned_model"], ...)

  Outputs: ``pruned_model`` (Model) with custom properties sparsity,
  param_count, zero_count, saved_model_bytes, gzip_weight_bytes, eval metrics;
  ``model_run`` (ModelRun) with TensorBoard logs (tfmot's pruning summaries).
  See components/pruner/README.md for every parameter.
  """

  SPEC_CLASS = PrunerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(
      self,
      model: types.BaseChannel,
      examples: types.BaseChannel,
      schema: Optional[types.BaseChannel] = None,
      transform_graph: Optional[types.BaseChannel] = None,
      label_key: Optional[str] = None,
      target_sparsity: Number = 0.8,
      initial_sparsity: Number = 0.0,
      schedule: str = "polynomial",
      begin_step: Number = 0,
      end_step: Optional[Number] = None,
      frequency: Optional[Number] = None,
      sparsity_structure: str = config_lib.UNSTRUCTURED,
      include_layers: Union[str, Sequence[str]] = "",
      exclude_layers: Union[str, Sequence[str]] = "",
      channel_ranking: str = "per_layer",
      channel_norm: str = "l1",
      finetune_steps: Number = 100,
      train_steps: Optional[Number] = None,
      epochs: Optional[Number] = None,
      batch_size: Number = 32,
      learning_rate: Number = 1e-3,
      seed: Number = 0,
      train_split: str = "train",
      eval_split: str = "eval",
      module_file: Optional[str] = None,
      search_sparsities: Union[str, Sequence[float], None] = None,
      search_steps: Optional[Number] = None,
      metric: str = "accuracy",
      max_drop: Optional[Number] = None,
      max_relative_drop: Optional[Number] = None,
      min_value: Optional[Number] = None,
      distillation_weight: Number = 0.0,
      distillation_temperature: Number = 2.0,
      distribution: str = "auto"):
    """Checks the parameters (fails now, not at run time) and wires channels.

    Args:
      model: the Trainer's Model (a Keras SavedModel).
      examples: Examples with the train and eval splits.
      schema: the Schema (needed unless ``transform_graph`` is given).
      transform_graph: the Transform output, when the Trainer used Transform.
      label_key, target_sparsity, initial_sparsity, schedule, begin_step,
      end_step, frequency, sparsity_structure, include_layers, exclude_layers,
      channel_ranking, channel_norm, finetune_steps, train_steps, epochs,
      batch_size, learning_rate, seed, train_split, eval_split, module_file:
        see :class:`tfx_compression.components.pruner.config.PrunerConfig`. Layer patterns may
        be a list or a comma-separated string.
      search_sparsities: turns on the iterative search: sparsities to try in
        rising order (list or '0.5,0.6,0.7'); the sparsest step that passes
        the gate is emitted (components/pruner/search.py).
      search_steps: fine-tuning steps per search step (default train_steps // 2:
        each step continues from the last one and moves the sparsity one
        notch).
      metric, max_drop, max_relative_drop, min_value: the gate each search
        step must pass, with the CompressionEvaluator's rules.
      distillation_weight, distillation_temperature: fine-tune towards the
        input model's outputs too (w in [0, 1], 0 = off; temperature T > 0);
        see components/common/distillation.py. In the search too: every
        step distils from the input model.
      distribution: the fine-tuning's tf.distribute strategy: 'auto' (several
        workers in TF_CONFIG, else several GPUs, else one device), 'mirrored',
        'multi_worker' or 'off' (common/distribute.py).
    """
    params = {
        LABEL_KEY_KEY: label_key,
        TARGET_SPARSITY_KEY: target_sparsity,
        INITIAL_SPARSITY_KEY: initial_sparsity,
        SCHEDULE_KEY: schedule,
        BEGIN_STEP_KEY: begin_step,
        END_STEP_KEY: end_step,
        FREQUENCY_KEY: frequency,
        SPARSITY_STRUCTURE_KEY: sparsity_structure,
        INCLUDE_LAYERS_KEY: _join(include_layers, INCLUDE_LAYERS_KEY),
        EXCLUDE_LAYERS_KEY: _join(exclude_layers, EXCLUDE_LAYERS_KEY),
        CHANNEL_RANKING_KEY: channel_ranking,
        CHANNEL_NORM_KEY: channel_norm,
        FINETUNE_STEPS_KEY: finetune_steps,
        TRAIN_STEPS_KEY: train_steps,
        EPOCHS_KEY: epochs,
        BATCH_SIZE_KEY: batch_size,
        LEARNING_RATE_KEY: learning_rate,
        SEED_KEY: seed,
        TRAIN_SPLIT_KEY: train_split,
        EVAL_SPLIT_KEY: eval_split,
        MODULE_FILE_KEY: module_file,
        SEARCH_SPARSITIES_KEY: _join_sparsities(search_sparsities),
        SEARCH_STEPS_KEY: search_steps,
        METRIC_KEY: metric,
        MAX_DROP_KEY: max_drop,
        MAX_RELATIVE_DROP_KEY: max_relative_drop,
        MIN_VALUE_KEY: min_value,
        DISTILLATION_WEIGHT_KEY: distillation_weight,
        DISTILLATION_TEMPERATURE_KEY: distillation_temperature,
        DISTRIBUTION_KEY: distribution,
    }
    # Ints are valid floats: TFX checks the declared type strictly.
    for key in _FLOAT:
      if isinstance(params[key], int) and not isinstance(params[key], bool):
        params[key] = float(params[key])
    config = config_lib.PrunerConfig.from_parameters(artifacts.concrete(params))
    if not artifacts.is_placeholder(label_key) and not artifacts.is_placeholder(
        module_file):
      config.check_data_inputs(schema is not None, transform_graph is not None)
    spec = PrunerSpec(
        model=model, examples=examples, schema=schema,
        transform_graph=transform_graph,
        pruned_model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun),
        **params)
    super().__init__(spec=spec)


def _join(value, parameter: str):
  if artifacts.is_placeholder(value) or value is None:
    return value
  return ",".join(config_lib.split_patterns(value, parameter))


def _join_sparsities(value):
  if artifacts.is_placeholder(value) or value is None or isinstance(value, str):
    return value
  return ",".join(f"{v:g}" for v in config_lib.parse_sparsities(value))
