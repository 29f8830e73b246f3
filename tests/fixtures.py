"""Small, seeded test data and models: digits as TFX artifacts, without running a pipeline."""

import os
from typing import Dict, Optional

import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_transform.tf_metadata import schema_utils
from tfx.types import standard_artifacts
from tfx.types import artifact_utils
from tfx.utils import io_utils

from tfx_compression.pipelines import digits_data
from tfx_compression.pipelines.trainers import digits_trainer
# Numpy-only, so Keras 3 tests import it from tests.assertions directly.
from tests.assertions import assert_same_weights  # noqa: F401  pylint: disable=unused-import

FEATURES = digits_data.FEATURE_KEYS
LABEL = digits_data.LABEL_KEY


def digits_arrays():
  from sklearn import datasets
  d = datasets.load_digits()
  return d.data.astype(np.int64), d.target.astype(np.int64)


def _example(pixels, label) -> bytes:
  feats = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
           for k, v in zip(FEATURES, pixels)}
  feats[LABEL] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def feature_spec():
  spec = {k: tf.io.FixedLenFeature([1], tf.int64) for k in FEATURES}
  spec[LABEL] = tf.io.FixedLenFeature([1], tf.int64)
  return spec


def schema_proto():
  return schema_utils.schema_from_feature_spec(feature_spec())


def write_examples(root: str, splits: Optional[Dict[str, slice]] = None,
                   limit: Optional[int] = None) -> standard_artifacts.Examples:
  """Digits as an Examples artifact (gzip TFRecords, train = first 2/3, eval = rest)."""
  x, y = digits_arrays()
  if limit:
    x, y = x[:limit], y[:limit]
  n = len(y)
  splits = splits or {"train": slice(0, 2 * n // 3), "eval": slice(2 * n // 3, n)}
  art = standard_artifacts.Examples()
  art.uri = os.path.join(root, "examples")
  art.split_names = artifact_utils.encode_split_names(list(splits))
  for name, sl in splits.items():
    d = os.path.join(art.uri, f"Split-{name}")
    os.makedirs(d, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(d, "data_tfrecord-00000-of-00001.gz"),
                              options="GZIP") as w:
      for px, lb in zip(x[sl], y[sl]):
        w.write(_example(px, lb))
  return art


def write_schema(root: str) -> standard_artifacts.Schema:
  art = standard_artifacts.Schema()
  art.uri = os.path.join(root, "schema")
  os.makedirs(art.uri, exist_ok=True)
  io_utils.write_pbtxt_file(os.path.join(art.uri, "schema.pbtxt"), schema_proto())
  return art


def train_digits_model(steps: int = 150, seed: int = 0) -> keras.Model:
  """The demo CNN, trained briefly in memory on the train split."""
  keras.utils.set_random_seed(seed)
  x, y = digits_arrays()
  n = 2 * len(y) // 3
  model = digits_trainer.build_model()
  feats = {k: x[:n, i:i + 1].astype(np.float32) for i, k in enumerate(FEATURES)}
  ds = tf.data.Dataset.from_tensor_slices((feats, y[:n])).shuffle(
      2048, seed=seed).repeat().batch(64)
  model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
  return model


def save_trainer_model(model: keras.Model, root: str,
                       name: str = "model") -> standard_artifacts.Model:
  """Saves like the demo Trainer: Keras SavedModel with serving_default, Format-Serving."""
  art = standard_artifacts.Model()
  art.uri = os.path.join(root, name)
  path = os.path.join(art.uri, "Format-Serving")
  spec = {k: v for k, v in feature_spec().items() if k != LABEL}
  model.save(path, save_format="tf",
             signatures=digits_trainer.make_serving_signatures(model, spec))
  return art


def serialized_eval_examples(n: int = 16):
  x, y = digits_arrays()
  start = 2 * len(y) // 3
  return [_example(px, lb) for px, lb in zip(x[start:start + n], y[start:start + n])]


# Tiny models and data for unit tests (seconds, not minutes).


def tiny_model(seed: int = 0, keras_module=keras):
  """16 inputs -> Dense 32 -> Dense 8 -> Dense 4 softmax; layers d1, d2, out.

  ``keras_module``: tf_keras (the default) or Keras 3's ``keras``.
  """
  keras_module.utils.set_random_seed(seed)
  inputs = keras_module.Input(shape=(16,), name="x")
  h = keras_module.layers.Dense(32, activation="relu", name="d1")(inputs)
  h = keras_module.layers.Dense(8, activation="relu", name="d2")(h)
  out = keras_module.layers.Dense(4, activation="softmax", name="out")(h)
  return keras_module.Model(inputs, out)


def tiny_features_model(names=("a", "b", "c"), classes: int = 3, seed: int = 0,
                        output_name: str = "scores") -> keras.Model:
  """Named scalar features -> Concatenate -> Dense 8 -> softmax over ``classes``.

  The shape of a Trainer model fed raw features (one input per feature).
  """
  keras.utils.set_random_seed(seed)
  inputs = {n: keras.Input(shape=(1,), name=n) for n in names}
  x = keras.layers.Concatenate()(list(inputs.values()))
  x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
  out = keras.layers.Dense(classes, activation="softmax", name=output_name)(x)
  return keras.Model(inputs, out)


def tiny_data(seed: int = 0, n: int = 256, nan: bool = False) -> tf.data.Dataset:
  """(16 features, label = argmax of the first 4) batches of 32 for tiny_model."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16)).astype(np.float32)
  y = (x[:, :4].argmax(axis=1)).astype(np.int64)
  if nan:
    x[:] = np.nan
  return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
      n, seed=seed).batch(32)
