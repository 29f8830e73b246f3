"""The Quantizer component: a Keras model -> a quantized TFLite model.

Example:

    quantizer = Quantizer(
        model=pruner.outputs["pruned_model"],
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        label_key="label",
        quantization="int8")
    pusher = tfx.components.Pusher(model=quantizer.outputs["quantized_model"],
                                   ...)
"""

from typing import Any, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter

from tfx_compression.components.common import artifacts
from tfx_compression.components.quantizer import executor
from tfx_compression.components.quantizer.config import MODES
from tfx_compression.components.quantizer.config import QuantizerConfig

MODEL_KEY = executor.MODEL_KEY
EXAMPLES_KEY = executor.EXAMPLES_KEY
SCHEMA_KEY = executor.SCHEMA_KEY
TRANSFORM_GRAPH_KEY = executor.TRANSFORM_GRAPH_KEY
QUANTIZED_MODEL_KEY = executor.QUANTIZED_MODEL_KEY

LABEL_KEY_KEY = "label_key"
QUANTIZATION_KEY = "quantization"
NUM_REPRESENTATIVE_SAMPLES_KEY = "num_representative_samples"
INT8_IO_TYPE_KEY = "int8_io_type"
QAT_STEPS_KEY = "qat_steps"
BATCH_SIZE_KEY = "batch_size"
LEARNING_RATE_KEY = "learning_rate"
SEED_KEY = "seed"
ALLOW_SELECT_OPS_KEY = "allow_select_ops"
PACK_INPUTS_KEY = "pack_inputs"
TRAIN_SPLIT_KEY = "train_split"
MODULE_FILE_KEY = "module_file"
DISTILLATION_WEIGHT_KEY = "distillation_weight"
DISTILLATION_TEMPERATURE_KEY = "distillation_temperature"
DISTRIBUTION_KEY = "distribution"
_FLOAT = (LEARNING_RATE_KEY, DISTILLATION_WEIGHT_KEY,
          DISTILLATION_TEMPERATURE_KEY)


class QuantizerSpec(types.ComponentSpec):
  """Quantizer component spec."""

  PARAMETERS = {
      LABEL_KEY_KEY: ExecutionParameter(type=str, optional=True),
      QUANTIZATION_KEY: ExecutionParameter(type=str),
      NUM_REPRESENTATIVE_SAMPLES_KEY: ExecutionParameter(type=int,
                                                         optional=True),
      INT8_IO_TYPE_KEY: ExecutionParameter(type=str, optional=True),
      QAT_STEPS_KEY: ExecutionParameter(type=int, optional=True),
      BATCH_SIZE_KEY: ExecutionParameter(type=int, optional=True),
      LEARNING_RATE_KEY: ExecutionParameter(type=float, optional=True),
      SEED_KEY: ExecutionParameter(type=int, optional=True),
      ALLOW_SELECT_OPS_KEY: ExecutionParameter(type=int, optional=True),
      PACK_INPUTS_KEY: ExecutionParameter(type=int, optional=True),
      TRAIN_SPLIT_KEY: ExecutionParameter(type=str, optional=True),
      MODULE_FILE_KEY: ExecutionParameter(type=str, optional=True),
      DISTILLATION_WEIGHT_KEY: ExecutionParameter(type=float, optional=True),
      DISTILLATION_TEMPERATURE_KEY: ExecutionParameter(type=float,
                                                       optional=True),
      DISTRIBUTION_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples,
                                     optional=True),
      SCHEMA_KEY: ChannelParameter(type=standard_artifacts.Schema,
                                   optional=True),
      TRANSFORM_GRAPH_KEY: ChannelParameter(
          type=standard_artifacts.TransformGraph, optional=True),
  }
  OUTPUTS = {
      QUANTIZED_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }


class Quantizer(base_component.BaseComponent):
  """Turns the Trainer's or the Pruner's Keras model into a quantized TFLite model.

  Output ``quantized_model``: a Model artifact holding
  ``Format-Serving/model.tflite`` (the stock Pusher pushes it unchanged) and
  ``Format-Serving/tflite_io.json`` (input names, order, dtypes, shapes and
  quantization; see README.md). Custom properties: quantization, tflite_bytes,
  tflite_gzip_bytes, sparsity, input_sparsity, float_tflite_bytes.
  """

  SPEC_CLASS = QuantizerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self,
               model: types.BaseChannel,
               examples: Optional[types.BaseChannel] = None,
               schema: Optional[types.BaseChannel] = None,
               transform_graph: Optional[types.BaseChannel] = None,
               label_key: Optional[Union[str, Any]] = None,
               quantization: Union[str, Any] = "dynamic",
               num_representative_samples: Union[int, Any] = 200,
               int8_io_type: Union[str, Any] = "float32",
               qat_steps: Union[int, Any] = 200,
               batch_size: Union[int, Any] = 32,
               learning_rate: Union[float, Any] = 1e-4,
               seed: Union[int, Any] = 0,
               allow_select_ops: Union[int, Any] = 0,
               pack_inputs: Union[int, Any] = 0,
               train_split: Union[str, Any] = "train",
               module_file: Optional[Union[str, Any]] = None,
               distillation_weight: Union[float, Any] = 0.0,
               distillation_temperature: Union[float, Any] = 2.0,
               distribution: Union[str, Any] = "auto"):
    """Checks the parameters and wires the channels.

    Args:
      model: the Trainer's or the Pruner's Model (a Keras SavedModel).
      examples: the pipeline's Examples (required for 'int8', 'int16x8', 'qat').
      schema: the raw Examples' Schema (parses them).
      transform_graph: the Transform's output, if the model takes transformed
        features; the TFLite model then takes transformed features too.
      label_key: the label in the raw Examples (required for 'qat').
      quantization: 'dynamic', 'float16', 'int8', 'int16x8' or 'qat'.
      num_representative_samples: calibration examples from ``train_split``.
      int8_io_type: 'float32', 'int8' or 'uint8' ('int8' and 'qat' only).
      qat_steps: QAT fine-tuning steps.
      batch_size: QAT batch size.
      learning_rate: QAT Adam learning rate.
      seed: seeds sampling and fine-tuning.
      allow_select_ops: 1 allows TensorFlow select ops for non-builtin ops.
      pack_inputs: 1 gives the TFLite model one packed [1, width] input in
        place of one input per feature (see common/tflite_packing.py); the
        order is in tflite_io.json.
      train_split: the split for calibration and fine-tuning.
      module_file: a Python file defining ``custom_objects`` for custom layers.
      distillation_weight, distillation_temperature: 'qat' fine-tunes towards
        the input model's outputs too (w in [0, 1], 0 = off; T in (0, 100]),
        as the Pruner does; see components/common/distillation.py.
      distribution: the tf.distribute strategy of 'qat''s fine-tuning: 'auto'
        (several workers in TF_CONFIG, else several GPUs, else one device),
        'mirrored', 'multi_worker' or 'off' (common/distribute.py).

    Raises:
      TypeError, ValueError: a bad parameter, or Examples missing for a mode
        that needs them; the message names the parameter and what to do.
    """
    if isinstance(allow_select_ops, bool):
      allow_select_ops = int(allow_select_ops)
    if isinstance(pack_inputs, bool):
      pack_inputs = int(pack_inputs)
    params = {
        LABEL_KEY_KEY: label_key,
        QUANTIZATION_KEY: quantization,
        NUM_REPRESENTATIVE_SAMPLES_KEY: num_representative_samples,
        INT8_IO_TYPE_KEY: int8_io_type,
        QAT_STEPS_KEY: qat_steps,
        BATCH_SIZE_KEY: batch_size,
        LEARNING_RATE_KEY: learning_rate,
        SEED_KEY: seed,
        ALLOW_SELECT_OPS_KEY: allow_select_ops,
        PACK_INPUTS_KEY: pack_inputs,
        TRAIN_SPLIT_KEY: train_split,
        MODULE_FILE_KEY: module_file,
        DISTILLATION_WEIGHT_KEY: distillation_weight,
        DISTILLATION_TEMPERATURE_KEY: distillation_temperature,
        DISTRIBUTION_KEY: distribution,
    }
    # Ints are valid floats: TFX checks the declared type strictly.
    for key in _FLOAT:
      if isinstance(params[key], int) and not isinstance(params[key], bool):
        params[key] = float(params[key])
    config = _check_parameters(artifacts.concrete(params))
    if config is not None:
      config.require_examples(examples is not None,
                              schema is not None or transform_graph is not None)
    spec = QuantizerSpec(
        model=model,
        examples=examples,
        schema=schema,
        transform_graph=transform_graph,
        quantized_model=types.Channel(type=standard_artifacts.Model),
        **params)
    super().__init__(spec=spec)


def _check_parameters(concrete) -> Optional[QuantizerConfig]:
  """The config of the concrete parameters; None when the mode is a runtime one.

  With ``quantization`` set at run time, the other values must suit at least
  one mode now; the executor checks them against the actual mode.
  """
  if QUANTIZATION_KEY in concrete:
    return QuantizerConfig.from_parameters(concrete)
  first_error = None
  for mode in MODES:
    try:
      QuantizerConfig.from_parameters({**concrete, QUANTIZATION_KEY: mode})
      return None
    except (TypeError, ValueError) as e:
      first_error = first_error or e
  raise first_error
