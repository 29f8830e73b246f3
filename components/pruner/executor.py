"""The Pruner's executor: moves artifacts in and out of :func:`pruning.prune_model`."""

import os
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
import tf_keras
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.utils import import_utils

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import features
from tfx_compression.components.common import model_io
from tfx_compression.components.common import model_stats
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner import search

# Input and output keys (component.py re-exports them for the spec).
MODEL_KEY = "model"
EXAMPLES_KEY = "examples"
SCHEMA_KEY = "schema"
TRANSFORM_GRAPH_KEY = "transform_graph"
PRUNED_MODEL_KEY = "pruned_model"
MODEL_RUN_KEY = "model_run"

_SAMPLE_EXAMPLES = 8


class Executor(base_executor.BaseExecutor):
  """Loads the model and data, calls prune_model, writes the pruned model."""

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

    train_patterns = artifacts.split_patterns(examples, config.train_split,
                                              "train_split")
    features.list_files(train_patterns, config.train_split)  # empty split: fail
    eval_patterns = (artifacts.split_patterns(examples, config.eval_split,
                                              "eval_split")
                     if config.eval_split else None)
    # The datasets' shuffle seeds combine with the global seed in force when
    # they are built: set it first, so the same seed gives the same order.
    tf_keras.utils.set_random_seed(config.seed)
    if input_fn is not None:
      train_ds, eval_ds = _module_datasets(input_fn, examples, schema,
                                           transform_dir, train_patterns,
                                           eval_patterns, config)
    else:
      decoder = features.ExampleDecoder(schema, config.label_key,
                                        features.keras_input_specs(model),
                                        transform_dir)
      train_ds = decoder.dataset(train_patterns, config.batch_size,
                                 shuffle=True, seed=config.seed, num_epochs=None,
                                 split=config.train_split)
      eval_ds = (decoder.dataset(eval_patterns, config.batch_size,
                                 split=config.eval_split)
                 if eval_patterns else None)
    train_examples = (features.count_examples(train_patterns, config.train_split)
                      if config.epochs else None)

    serving = os.path.join(pruned_artifact.uri, model_io.SERVING_DIR)
    # Both outputs appear only if everything succeeds: no partial model.
    with model_io.staged_output(serving) as model_dir, \
        model_io.staged_output(run_artifact.uri) as log_dir:
      if config.is_search:
        loss, _ = pruning.resolve_loss(model, custom_objects)
        searched = search.search_sparsity(model, train_ds, eval_ds, config,
                                          config.gate(), loss=loss,
                                          log_dir=log_dir)
        result = searched.prune_result
      else:
        searched = None
        result = pruning.prune_model(
            model, train_ds, config, eval_ds=eval_ds, log_dir=log_dir,
            custom_objects=custom_objects, train_examples=train_examples)
      pruning.export_pruned(result, model, model_dir,
                            _sample_examples(eval_patterns or train_patterns),
                            label_key=config.label_key)
      properties = (searched.properties() if searched else result.properties())
      properties["saved_model_bytes"] = model_stats.dir_bytes(model_dir)
      properties["baseline_saved_model_bytes"] = model_stats.dir_bytes(source)

    if searched is not None:
      # Beside the model, not inside Format-Serving: the Pusher pushes that
      # directory, and the curve is not part of the model.
      artifacts.write_json(os.path.join(pruned_artifact.uri,
                                        search.SEARCH_FILENAME),
                           searched.to_dict())
    artifacts.set_properties(pruned_artifact, properties)
    logging.info("Pruner wrote %s: sparsity %.4f (target %.4f), %d of %d "
                 "weights zero, gzip weights %d -> %d bytes, eval %s -> %s.",
                 serving, properties["sparsity"], properties["target_sparsity"],
                 properties["zero_count"], properties["param_count"],
                 properties["baseline_gzip_weight_bytes"],
                 properties["gzip_weight_bytes"], result.baseline_metrics,
                 result.metrics)


def _user_module(module_file: Optional[str]):
  """(input_fn or None, custom_objects or None) from the user's module file."""
  if not module_file:
    return None, None
  found = {}
  for name in ("input_fn", "custom_objects"):
    try:
      found[name] = import_utils.import_func_from_source(module_file, name)
    except AttributeError:
      found[name] = None
    except (ImportError, OSError) as e:
      # TFX reports a missing file as "input_fn ... not found": say which
      # parameter is wrong instead.
      raise ValueError(f"`module_file`={module_file!r} could not be imported: "
                       f"{e}. Give the path of a Python file the step can "
                       "read.") from e
  if found["input_fn"] is None and found["custom_objects"] is None:
    raise ValueError(
        f"`module_file`={module_file!r} defines neither `input_fn` nor "
        "`custom_objects`; the Pruner uses only those two names.")
  custom_objects = found["custom_objects"]
  if custom_objects is not None and not isinstance(custom_objects, dict):
    raise TypeError(f"`custom_objects` in {module_file!r} must be a dict of "
                    f"name -> class or function, got {type(custom_objects)}.")
  return found["input_fn"], custom_objects


def _module_datasets(input_fn, examples, schema, transform_dir, train_patterns,
                     eval_patterns, config):
  """Datasets from the module's input_fn, called as the Trainer calls it."""
  # pylint: disable=g-import-not-at-top
  from tfx.components.trainer import fn_args_utils
  from tfx.components.util import tfxio_utils
  # pylint: enable=g-import-not-at-top
  descriptors = ["Pruner"]
  accessor = fn_args_utils.DataAccessor(
      tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact(
          [examples], descriptors),
      record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact(
          [examples], descriptors),
      data_view_decode_fn=tfxio_utils.get_data_view_decode_fn_from_artifact(
          [examples], descriptors))
  if transform_dir:
    import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
    third = tft.TFTransformOutput(transform_dir)
  else:
    # TFX's example modules without Transform take the Schema here.
    third = schema
  train_ds = input_fn(train_patterns, accessor, third, config.batch_size)
  eval_ds = None
  if eval_patterns:
    # Trainer input_fns usually repeat forever: evaluate one pass's worth.
    eval_ds = input_fn(eval_patterns, accessor, third, config.batch_size)
    n = features.count_examples(eval_patterns, config.eval_split)
    eval_ds = eval_ds.take(-(-n // config.batch_size))
  return train_ds, eval_ds


def _sample_examples(patterns) -> List[bytes]:
  files = features.list_files(patterns)
  ds = tf.data.TFRecordDataset(
      files, compression_type="GZIP" if files[0].endswith(".gz") else "")
  return [r.numpy() for r in ds.take(_SAMPLE_EXAMPLES)]
