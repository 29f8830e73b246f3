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


# What a label that is absent from an example becomes, never a class id: -1 for
# integer labels, NaN for float labels, "" for strings. Consumers count these
# rows apart (decode_with_presence) or refuse them (require_labels).
MISSING_INT_LABEL = -1


def _missing_value(dtype: tf.DType):
  if dtype == tf.string:
    return ""
  if dtype.is_floating:
    return float("nan")
  return MISSING_INT_LABEL


def _label_and_presence(t) -> Tuple[tf.Tensor, tf.Tensor]:
  """A parsed label -> (dense label, [batch] bool: the example has a value).

  A VarLen label (what a schema inferred from data with missing values gives)
  parses to a SparseTensor; rows without a value are filled with
  _missing_value, not with 0, which would read as class 0.
  """
  if isinstance(t, tf.RaggedTensor):
    t = t.to_sparse()
  if isinstance(t, tf.SparseTensor):
    missing = tf.cast(_missing_value(t.dtype), t.dtype)
    if t.shape.rank == 2:
      # Keep at least one column, so a batch where every label is missing
      # still has one (missing) value per example.
      shape = tf.stack([t.dense_shape[0], tf.maximum(t.dense_shape[1], 1)])
      t = tf.sparse.reset_shape(t, shape)
    marks = tf.SparseTensor(t.indices, tf.ones_like(t.values, tf.int32),
                            t.dense_shape)
    dense_marks = tf.sparse.to_dense(marks)
    present = tf.reduce_sum(
        tf.reshape(dense_marks, [tf.shape(dense_marks)[0], -1]), axis=1) > 0
    return tf.sparse.to_dense(t, default_value=missing), present
  return t, tf.ones([tf.shape(t)[0]], tf.bool)


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
    self.label_parameter = label_parameter
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
    if label_key in missing:
      self.check_label()
    if missing:
      raise DataError(
          f"The model's inputs {missing} are not features of {source} "
          f"(available: {sorted(available)}). The model must take its inputs by "
          "feature name; a model that needs its own input function can be fed "
          "through `module_file`.")

    if self._tft_output is None:
      self._check_types(source)

  def _check_types(self, source: str) -> None:
    """A string feature for a numeric model input (or the reverse) fails here,
    naming the feature, not as a raw TensorFlow error inside the model."""
    for name, spec in self.input_specs.items():
      feature = self.raw_spec[name]
      got = getattr(feature, "dtype", None)
      if got is None or (got == tf.string) == (spec.dtype == tf.string):
        continue
      raise DataError(
          f"The model's input {name!r} is {spec.dtype.name} but the feature "
          f"{name!r} is {got.name} in {source}. Feed the model the type it "
          "was trained on: fix the schema, or map the feature with Transform.")

  @property
  def transform_output(self):
    return self._tft_output

  def decode(self, serialized: tf.Tensor) -> Tuple[Dict[str, tf.Tensor], tf.Tensor]:
    """A batch of serialized tf.Examples -> (model inputs by name, label [batch]).

    An example without a label gets a label that is no class id (-1, or NaN
    for a float label); see decode_with_presence and require_labels.
    """
    features, label, _ = self.decode_with_presence(serialized)
    return features, label

  def decode_with_presence(self, serialized: tf.Tensor
                           ) -> Tuple[Dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """Like decode, plus a [batch] bool tensor: True where the label is present."""
    try:
      parsed = tf.io.parse_example(serialized, self.raw_spec)
    except tf.errors.InvalidArgumentError as e:
      raise DataError(_parse_error_message(e)) from e
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
    label, present = _label_and_presence(label)
    if label.shape.rank is not None and label.shape.rank > 1:
      label = tf.reshape(label, [-1])
    return features, label, present

  def check_label(self) -> None:
    """Raises if the label is one of the model's inputs.

    Not checked in the constructor: the Quantizer's calibration parses any raw
    feature as a stand-in label and never reads it.
    """
    if self.label_key in self.input_specs:
      raise DataError(
          f"`{self.label_parameter}`={self.label_key!r} is one of the model's "
          f"inputs ({list(self.input_specs)}): a model fed its own label "
          f"proves nothing. Set `{self.label_parameter}` to the label feature, "
          "which the model must not take as an input.")

  def require_labels(self, file_patterns: Optional[Sequence[str]],
                     split: str) -> int:
    """Checks the label (check_label) and that every example of the split has one.

    Training on a made-up label is worse than not training: call this before
    fine-tuning on a split. Reads the split's labels once. Returns the number
    of examples (0 when ``file_patterns`` is empty or None: no split to read).

    Raises:
      DataError: the label is a model input, or examples have no label value.
    """
    self.check_label()
    if not file_patterns:
      return 0
    files = list_files(file_patterns, split)
    ds = tf.data.TFRecordDataset(files, compression_type=_compression(files))
    spec = {self.label_key: self.raw_spec[self.label_key]}
    total = missing = 0
    for batch in ds.batch(4096):
      try:
        parsed = tf.io.parse_example(batch, spec)
      except tf.errors.InvalidArgumentError as e:
        raise DataError(_parse_error_message(e)) from e
      _, present = _label_and_presence(parsed[self.label_key])
      total += int(present.shape[0])
      missing += int(tf.reduce_sum(tf.cast(~present, tf.int32)))
    if missing:
      raise DataError(missing_labels_message(missing, total, split,
                                             self.label_key,
                                             self.label_parameter))
    return total


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


def compression_type(files: List[str]) -> str:
  """The TFRecordDataset compression of ExampleGen's files ('GZIP' or '')."""
  return "GZIP" if files[0].endswith(".gz") else ""


_compression = compression_type


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


def missing_labels_message(missing: int, total: int, split: str,
                           label_key: str, label_parameter: str = "label_key"
                           ) -> str:
  """One wording for examples without a label, wherever they are found."""
  return (f"{missing} of {total} examples of the '{split}' split have no value "
          f"for `{label_parameter}`={label_key!r}; they are not read as class "
          "0 or any other class. Drop or label those rows before ExampleGen.")


def _parse_error_message(error: Exception) -> str:
  """TensorFlow's parse error, reduced to a line naming the feature."""
  import re  # pylint: disable=g-import-not-at-top
  text = getattr(error, "message", str(error))
  key = re.search(r"Key: ([^,.\s]+)", text)
  types = re.search(r"Data types don't match\. Data type: (\w+) but expected "
                    r"type: (\w+)", text)
  if key and types:
    return (f"The feature {key.group(1)!r} holds {types.group(1)} values in "
            f"the Examples but the schema says {types.group(2)}. Regenerate the "
            "schema from these Examples (SchemaGen), or fix the data.")
  first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
  who = f"the feature {key.group(1)!r}" if key else "a feature"
  return (f"The Examples do not match the schema at {who}: {first}. Regenerate "
          "the schema from these Examples (SchemaGen), or fix the data.")
