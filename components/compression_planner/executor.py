"""The CompressionPlanner's executor: artifacts in and out of ``search_plan``."""

import os
import shutil
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import model_io
from tfx_compression.components.common import side_files
from tfx_compression.components.compression_planner import config as config_lib
from tfx_compression.components.compression_planner import planning
from tfx_compression.components.pruner import inputs
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner import strategy as strategy_lib

# Input and output keys (component.py re-exports them for the spec).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
TRANSFORM_GRAPH_KEY = "transform_graph"
COMPRESSED_MODEL_KEY = "compressed_model"


class Executor(base_executor.BaseExecutor):
  """Loads the model and data, searches the plan, writes the chosen model."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    config = config_lib.PlannerConfig.from_parameters(exec_properties)
    model_artifact = artifacts.single(input_dict, MODEL_KEY)
    examples = artifacts.single(input_dict, EXAMPLES_KEY)
    schema = artifacts.read_schema(
        artifacts.single(input_dict, SCHEMA_KEY, required=False))
    transform_dir = artifacts.transform_dir(
        artifacts.single(input_dict, TRANSFORM_GRAPH_KEY, required=False))
    output = artifacts.single(output_dict, COMPRESSED_MODEL_KEY)
    config.check_data_inputs(schema is not None, transform_dir is not None)
    logging.info("CompressionPlanner: %s -> %s with %s", model_artifact.uri,
                 output.uri, config)

    input_fn, custom_objects = inputs.user_module(config.module_file)
    source = model_io.serving_dir(model_artifact.uri)
    model = model_io.load_keras_model(source, MODEL_KEY, custom_objects)
    data = inputs.read_data(model, examples, schema, transform_dir, input_fn,
                            config.pruner_config(config_lib.UNSTRUCTURED))
    loss, _ = strategy_lib.backend(model).resolve_loss(model, custom_objects)

    def export(result, path: str) -> None:
      pruning.export_pruned(result, model, path, data.sample_examples,
                            label_key=config.label_key, source_dir=source,
                            transform_dir=transform_dir)

    # Every candidate's file lives in the output's scratch until the chosen
    # one is copied out; a killed step leaves it in its unpublished output.
    scratch = os.path.join(output.uri, ".scratch")
    try:
      plan = planning.search_plan(
          model, data.train_ds, data.eval_ds, config, loss=loss,
          work_dir=os.path.join(scratch, "candidates"), export_fn=export)
      with model_io.staged_output(output.uri) as staging:
        write_chosen(plan, os.path.join(staging, model_io.SERVING_DIR))
        # Beside the model, not inside Format-Serving (which is pushed).
        side_files.write_plan(staging, plan.to_dict())
    finally:
      shutil.rmtree(scratch, ignore_errors=True)
    artifacts.set_properties(output, plan.properties())
    chosen = plan.chosen
    logging.info("CompressionPlanner wrote %s: %s %.2f %s, %s %.4f (baseline "
                 "%.4f), %s raw bytes, %s gzip bytes, %s us; %d candidates.",
                 output.uri, chosen.structure, chosen.sparsity, chosen.mode,
                 plan.gate.metric, chosen.metric, plan.baseline["metric"],
                 chosen.raw_bytes, chosen.gzip_bytes, chosen.latency_us,
                 len(plan.candidates))


def write_chosen(plan: planning.PlanResult, serving: str) -> None:
  """Copies the chosen candidate, as measured, into ``serving``.

  A TFLite candidate becomes ``model.tflite`` with its ``tflite_io.json`` (the
  Quantizer's layout); a SavedModel candidate is the directory itself (the
  Pruner's layout). The copy's SHA-256 is checked against the measured one.

  Raises:
    RuntimeError: the copy differs from what was measured.
  """
  chosen = plan.chosen
  if chosen.kind == "tflite":
    os.makedirs(serving)
    target = os.path.join(serving, model_io.TFLITE_FILENAME)
    shutil.copyfile(chosen.file, target)
    side_files.write_tflite_io(serving, plan.ios[chosen.index])
  else:
    shutil.copytree(chosen.file, serving)
    target = serving
  if planning.digest(target) != chosen.sha256:
    raise RuntimeError(f"The chosen model copied to {target} differs from the "
                       f"candidate {chosen.index} that was measured; nothing "
                       "was emitted.")
