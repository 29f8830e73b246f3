"""The Pruner's data: the user's module file and the datasets to fine-tune and score on.

TFX glue (Examples artifacts, the Trainer's ``input_fn`` contract), kept out of
both the executor and the pruning functions, which only see ``tf.data``.

Example:

    input_fn, custom_objects = user_module(config.module_file)
    data = read_data(model, examples, schema, transform_dir, input_fn, config)
    data.train_ds, data.eval_ds
"""

import dataclasses
from typing import Any, List, Optional

import tensorflow as tf
import tf_keras

from tfx_compression.components.common import artifacts
from tfx_compression.components.common import features
from tfx_compression.components.common import user_module as user_module_lib

_SAMPLE_EXAMPLES = 8


@dataclasses.dataclass
class Data:
  """Datasets for the pruning run.

  Attributes:
    train_ds: (features, label) batches, repeated, shuffled with the seed.
    eval_ds: finite (features, label) batches of the eval split, or None.
    train_examples: examples in the train split (counted only with epochs).
    sample_examples: a few serialized tf.Examples (eval split, else train)
      to check re-created serving signatures on.
  """
  train_ds: Any
  eval_ds: Any
  train_examples: Optional[int]
  sample_examples: List[bytes]


def read_data(model, examples, schema, transform_dir, input_fn, config) -> Data:
  """The datasets, as the module's input_fn or the Schema/Transform decode them."""
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
    train_ds, eval_ds = module_datasets(input_fn, examples, schema,
                                        transform_dir, train_patterns,
                                        eval_patterns, config)
  else:
    decoder = features.ExampleDecoder(schema, config.label_key,
                                      features.keras_input_specs(model),
                                      transform_dir)
    decoder.require_labels(train_patterns, config.train_split)  # not class 0
    decoder.require_labels(eval_patterns, config.eval_split)
    train_ds = decoder.dataset(train_patterns, config.batch_size,
                               shuffle=True, seed=config.seed, num_epochs=None,
                               split=config.train_split)
    eval_ds = (decoder.dataset(eval_patterns, config.batch_size,
                               split=config.eval_split)
               if eval_patterns else None)
  train_examples = (features.count_examples(train_patterns, config.train_split)
                    if config.epochs else None)
  return Data(train_ds, eval_ds, train_examples,
              _sample_examples(eval_patterns or train_patterns))


def user_module(module_file: Optional[str]):
  """(input_fn or None, custom_objects or None) from the user's module file."""
  if not module_file:
    return None, None
  found = user_module_lib.load(module_file, ("input_fn", "custom_objects"))
  if found["input_fn"] is None and found["custom_objects"] is None:
    raise ValueError(
        f"`module_file`={module_file!r} defines neither `input_fn` nor "
        "`custom_objects`; the Pruner uses only those two names.")
  return found["input_fn"], user_module_lib.custom_objects(
      found["custom_objects"], module_file)


def module_datasets(input_fn, examples, schema, transform_dir, train_patterns,
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
