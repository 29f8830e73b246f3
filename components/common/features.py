"""Raw tf.Examples -> the model's inputs and the label, the way the Trainer fed it.

One code path for all three components: the Pruner's and Quantizer's fine-tuning and
representative data, and the CompressionEvaluator's Beam workers all decode examples
with :class:`ExampleDecoder`, so the baseline and the candidate see the same tensors.

Without Transform, raw features are parsed with the Schema's feature spec and matched
to the model's inputs by name. With a TransformGraph, raw examples are parsed with the
Transform's raw feature spec and run through its ``transform_features_layer`` (as the
serving signature of a TFX Keras model does); the label is the transformed label when
the preprocessing function outputs ``label_key``, otherwise the raw one.
"""

import collections
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf


class DataError(ValueError):
  """The examples, the schema or the label do not fit the model."""


def keras_input_specs(model) -> "collections.OrderedDict[str, tf.TensorSpec]":
  """Name -> TensorSpec of a Keras model's inputs, in the model's order."""
  specs = collections.OrderedDict()
  inputs = model.inputs or []
  for t in inputs:
    name = t.name.split(":")[0]
    # Functional models name their Input tensors after the Input layers.
    specs[name] = tf.TensorSpec(t.shape, t.dtype, name=name)
  if not specs:
    raise DataError(
        f"The model ({type(model).__name__}) has no defined inputs; a subclassed "
        "model must be built on named Keras Inputs to be fed from Examples.")
  # Prefer the model's declared input names (dict keys) when present.
  names = getattr(model, "input_names", None)
  if names and len(names) == len(specs):
    specs = collections.OrderedDict(
        (n, tf.TensorSpec(s.shape, s.dtype, name=n))
        for n, s in zip(names, specs.values()))
  return specs


def _feature_spec_from_schema(schema) -> Dict[str, object]:
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  return dict(schema_utils.schema_as_feature_spec(schema).feature_spec)


def _dense(t: tf.Tensor) -> tf.Tensor:
  if isinstance(t, tf.SparseTensor):
    default = "" if t.dtype == tf.string else 0
    return tf.sparse.to_dense(t, default_value=tf.cast(default, t.dtype))
  if isinstance(t, tf.RaggedTensor):
    return t.to_tensor()
  return t


def _conform(t: tf.Tensor, spec: tf.TensorSpec) -> tf.Tensor:
  t = _dense(t)
  want = spec.shape.rank
  if want is not None and t.shape.rank is not None:
    if t.shape.rank == want - 1:
      t = tf.expand_dims(t, -1)
    elif t.shape.rank == want + 1 and t.shape[-1] == 1:
      t = tf.squeeze(t, -1)
  if t.dtype != spec.dtype and spec.dtype != tf.string and t.dtype != tf.string:
    t = tf.cast(t, spec.dtype)
  return t


class ExampleDecoder:
  """Decodes batches of serialized raw tf.Examples into (features, label).

  Example:

      decoder = ExampleDecoder(schema, "label", keras_input_specs(model))
      ds = decoder.dataset(["/data/train/*"], batch_size=32)
      model.fit(ds)
  """

  def __init__(self, schema, label_key: str,
               input_specs: Mapping[str, tf.TensorSpec],
               transform_output_dir: Optional[str] = None,
               label_parameter: str = "label_key"):
    if not isinstance(label_key, str) or not label_key:
      raise DataError(f"`{label_parameter}` must name the label feature in the "
                      f"raw Examples, got {label_key!r}.")
    self.label_key = label_key
    self.input_specs = collections.OrderedDict(input_specs)
    self._tft_output = None
    self._tft_layer = None
    if transform_output_dir:
      import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
      self._tft_output = tft.TFTransformOutput(transform_output_dir)
      self.raw_spec = dict(self._tft_output.raw_feature_spec())
      available = set(self._tft_output.transformed_feature_spec())
      source = "the Transform output"
    else:
      self.raw_spec = _feature_spec_from_schema(schema)
      available = set(self.raw_spec) - {label_key}
      source = "the Examples' schema"
    if label_key not in self.raw_spec:
      raise DataError(
          f"`{label_parameter}`={label_key!r} is not a feature of the raw "
          f"Examples. Features in the schema: {sorted(self.raw_spec)}. Set "
          f"`{label_parameter}` to the label's name as it is in the raw data.")
    missing = [n for n in self.input_specs if n not in available]
    if missing:
      raise DataError(
          f"The model's inputs {missing} are not features of {source} "
          f"(available: {sorted(available)}). The model must take its inputs by "
          "feature name; a model that needs its own input function can be fed "
          "through `module_file`.")

  @property
  def transform_output(self):
    return self._tft_output

  def decode(self, serialized: tf.Tensor) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
    """A batch of serialized tf.Examples -> (model inputs by name, label [batch])."""
    parsed = tf.io.parse_example(serialized, self.raw_spec)
    label = parsed[self.label_key]
    if self._tft_output is not None:
      if self._tft_layer is None:
        self._tft_layer = self._tft_output.transform_features_layer()
      transformed = self._tft_layer(parsed)
      if self.label_key in transformed:
        label = transformed[self.label_key]
      source = transformed
    else:
      source = parsed
    features = {n: _conform(source[n], s) for n, s in self.input_specs.items()}
    label = _dense(label)
    if label.shape.rank is not None and label.shape.rank > 1:
      label = tf.reshape(label, [-1])
    return features, label

  def dataset(self, file_patterns: Sequence[str], batch_size: int,
              shuffle: bool = False, seed: Optional[int] = None,
              num_epochs: Optional[int] = 1, split: str = "train",
              max_examples: Optional[int] = None) -> tf.data.Dataset:
    """A batched (features, label) dataset over the TFRecord files.

    Raises:
      DataError: no files match, or the files hold no example.
    """
    files = list_files(file_patterns, split)
    ds = tf.data.TFRecordDataset(files, compression_type=_compression(files))
    if max_examples:
      ds = ds.take(max_examples)
    if shuffle:
      ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if num_epochs != 1:
      ds = ds.repeat(num_epochs)
    ds = ds.batch(batch_size).map(self.decode)
    return ds.prefetch(tf.data.AUTOTUNE)


def _compression(files: List[str]) -> str:
  return "GZIP" if files[0].endswith(".gz") else ""


def list_files(file_patterns: Sequence[str], split: str = "train") -> List[str]:
  """The record files of a split; fails clearly if the split is empty."""
  files = []
  for pattern in file_patterns:
    files.extend(sorted(tf.io.gfile.glob(pattern)))
  files = [f for f in files if not tf.io.gfile.isdir(f)]
  if not files:
    raise DataError(f"The '{split}' split has no files ({list(file_patterns)}). "
                    "Check `splits` and the upstream ExampleGen's output.")
  ds = tf.data.TFRecordDataset(files, compression_type=_compression(files))
  if next(iter(ds.take(1)), None) is None:
    raise DataError(f"The '{split}' split is empty: {len(files)} file(s) and no "
                    "example. Check the ExampleGen's input and its split config.")
  logging.info("Split '%s': %d file(s).", split, len(files))
  return files


def count_examples(file_patterns: Sequence[str], split: str = "eval") -> int:
  files = list_files(file_patterns, split)
  ds = tf.data.TFRecordDataset(files, compression_type=_compression(files))
  return int(ds.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1).numpy())
