"""The Pruner's executor: moves artifacts in and out of :func:`pruning.prune_and_export`."""

import contextlib
import os
import shutil
import tempfile
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import distribute
from tfx_compression.components.common import model_io
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import side_files
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import inputs
from tfx_compression.components.pruner import pruning
# Read here by tests/test_safe_loading.py.
from tfx_compression.components.pruner.inputs import user_module as _user_module

# Input and output keys (component.py re-exports them for the spec).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
TRANSFORM_GRAPH_KEY = "transform_graph"
PRUNED_MODEL_KEY = "pruned_model"
MODEL_RUN_KEY = "model_run"


class Executor(base_executor.BaseExecutor):
  """Loads the model and data, calls prune_and_export, writes the pruned model."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    config = config_lib.PrunerConfig.from_parameters(exec_properties)
    model_artifact = artifacts.single(input_dict, MODEL_KEY)
    examples = artifacts.single(input_dict, EXAMPLES_KEY)
    schema = artifacts.read_schema(
        artifacts.single(input_dict, SCHEMA_KEY, required=False))
    transform_dir = artifacts.transform_dir(
        artifacts.single(input_dict, TRANSFORM_GRAPH_KEY, required=False))
    pruned_artifact = artifacts.single(output_dict, PRUNED_MODEL_KEY)
    run_artifact = artifacts.single(output_dict, MODEL_RUN_KEY)
    config.check_data_inputs(schema is not None, transform_dir is not None)
    logging.info("Pruner: %s -> %s with %s", model_artifact.uri,
                 pruned_artifact.uri, config)

    input_fn, custom_objects = _user_module(config.module_file)
    source = model_io.serving_dir(model_artifact.uri)
    model = model_io.load_keras_model(source, MODEL_KEY, custom_objects)
    data = inputs.read_data(model, examples, schema, transform_dir, input_fn,
                            config)

    out_uri, run_uri = pruned_artifact.uri, run_artifact.uri
    chief = distribute.is_chief()
    if not chief:
      # TFX's Trainer rule: in a multi-worker run every worker fine-tunes (the
      # all-reduce needs them all) but only the chief writes the outputs.
      out_uri = tempfile.mkdtemp(prefix="pruner-worker-")
      run_uri = os.path.join(out_uri, "model_run")
      logging.info("Pruner: not the chief (TF_CONFIG); outputs go to %s.",
                   out_uri)
    serving = os.path.join(out_uri, model_io.SERVING_DIR)
    # Both outputs appear only if everything succeeds: no partial model.
    with _scratch_inside(out_uri), \
        model_io.staged_output(serving) as model_dir, \
        model_io.staged_output(run_uri) as log_dir:
      outcome = pruning.prune_and_export(
          model, data.train_ds, config, model_dir, eval_ds=data.eval_ds,
          log_dir=log_dir, custom_objects=custom_objects,
          train_examples=data.train_examples,
          sample_serialized_examples=data.sample_examples, source_dir=source,
          transform_dir=transform_dir)
      properties = outcome.properties()
      properties["saved_model_bytes"] = model_stats.dir_bytes(model_dir)
      properties["baseline_saved_model_bytes"] = model_stats.dir_bytes(source)

    if not chief:
      shutil.rmtree(out_uri, ignore_errors=True)
    elif outcome.search is not None:
      # Beside the model, not inside Format-Serving: the Pusher pushes that
      # directory, and the curve is not part of the model.
      side_files.write_pruning_search(pruned_artifact.uri,
                                      outcome.search.to_dict())
    artifacts.set_properties(pruned_artifact, properties)
    logging.info("Pruner wrote %s: sparsity %.4f (target %.4f), %d of %d "
                 "weights zero, gzip weights %d -> %d bytes, eval %s -> %s.",
                 serving, properties["sparsity"], properties["target_sparsity"],
                 properties["zero_count"], properties["param_count"],
                 properties["baseline_gzip_weight_bytes"],
                 properties["gzip_weight_bytes"],
                 outcome.result.baseline_metrics, outcome.result.metrics)


@contextlib.contextmanager
def _scratch_inside(uri: str):
  """Puts this step's temporary files (the staged outputs too) under ``uri``.

  A step killed by SIGKILL then leaves its scratch inside the output artifact of
  the killed execution, which is never published, and not in /tmp. Removed when
  the step ends. Remote URIs keep the system's temporary directory.
  """
  if "://" in uri:
    yield
    return
  scratch = os.path.join(uri, ".scratch")
  os.makedirs(scratch, exist_ok=True)
  previous = tempfile.tempdir
  tempfile.tempdir = scratch  # What tempfile.mkdtemp() uses by default.
  try:
    yield
  finally:
    tempfile.tempdir = previous
    shutil.rmtree(scratch, ignore_errors=True)
