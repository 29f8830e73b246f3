"""The Quantizer's executor: moves artifacts in and out of quantization.quantize."""

import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import distribute
from tfx_compression.components.common import model_io
from tfx_compression.components.common import side_files
from tfx_compression.components.common import user_module
from tfx_compression.components.quantizer import quantization
from tfx_compression.components.quantizer.config import QuantizerConfig

# Keys of the component spec (component.py re-exports them).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
TRANSFORM_GRAPH_KEY = "transform_graph"
QUANTIZED_MODEL_KEY = "quantized_model"



class Executor(base_executor.BaseExecutor):
  """Loads the Keras model, quantizes it, writes Format-Serving/model.tflite."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    config = QuantizerConfig.from_parameters(exec_properties)
    model_artifact = artifacts.single(input_dict, MODEL_KEY)
    examples = artifacts.single(input_dict, EXAMPLES_KEY, required=False)
    schema_artifact = artifacts.single(input_dict, SCHEMA_KEY, required=False)
    transform = artifacts.single(input_dict, TRANSFORM_GRAPH_KEY,
                                 required=False)
    output = artifacts.single(output_dict, QUANTIZED_MODEL_KEY)
    config.require_examples(examples is not None,
                            schema_artifact is not None or transform is not None)
    logging.info("Quantizer: quantization=%s, model %s -> %s",
                 config.quantization, model_artifact.uri, output.uri)

    model = model_io.load_keras_model(
        model_io.serving_dir(model_artifact.uri), parameter=MODEL_KEY,
        custom_objects=load_custom_objects(config.module_file))
    representative = train = None
    if config.needs_examples:
      patterns = artifacts.split_patterns(examples, config.train_split,
                                          parameter="train_split")
      representative, train = quantization.example_data(
          patterns, artifacts.read_schema(schema_artifact), model, config,
          transform_output_dir=artifacts.transform_dir(transform))
    result = quantization.quantize(
        model, config, representative_data=representative, train_data=train,
        preprocessing="transform" if transform is not None else "none")
    if not distribute.is_chief():
      # TFX's Trainer rule (the Pruner's too): in a multi-worker QAT every
      # worker fine-tunes (the all-reduce needs them all), the chief writes.
      logging.info("Quantizer: not the chief (TF_CONFIG); nothing written.")
      return

    with model_io.staged_output(output.uri) as staging:
      serving = os.path.join(staging, model_io.SERVING_DIR)
      os.makedirs(serving)
      with open(os.path.join(serving, model_io.TFLITE_FILENAME), "wb") as f:
        f.write(result.tflite_model)
      side_files.write_tflite_io(serving, result.io)
    artifacts.set_properties(output, result.stats)
    # The lineage the evaluator follows to the Pruner's search curve.
    output.set_string_custom_property(side_files.SOURCE_MODEL_PROPERTY,
                                      model_artifact.uri)
    logging.info("Quantizer wrote %s: %s", output.uri, result.stats)


def load_custom_objects(module_file: Optional[str]) -> Optional[Dict[str, Any]]:
  """The ``custom_objects`` dict a user module declares (the Pruner's contract).

  Only code the user named in ``module_file`` runs; nothing is read from the
  model artifact.
  """
  if not module_file:
    return None
  objects = user_module.load(module_file, ("custom_objects",))["custom_objects"]
  if objects is None:
    raise ValueError(
        f"`module_file`={module_file!r} does not define `custom_objects`, the "
        "only name the Quantizer uses (a dict of name -> custom layer or "
        "function).")
  return user_module.custom_objects(objects, module_file)
