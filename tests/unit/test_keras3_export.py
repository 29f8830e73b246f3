"""Keras 3 models in the Trainer's layout: loading (model_io) and writing (keras3_export)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.common import keras3_export
from tfx_compression.components.common import model_io

FEATURES = ("a", "b", "c")


def build(hidden=8, seed=0):
  keras.utils.set_random_seed(seed)
  inputs = {k: keras.Input((1,), name=k) for k in FEATURES}
  x = keras.layers.Concatenate(name="joined")(list(inputs.values()))
  x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
  out = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
  return keras.Model(inputs, out)


SPEC = {k: tf.io.FixedLenFeature([1], tf.float32) for k in FEATURES}
LABELLED = dict(SPEC, label=tf.io.FixedLenFeature([1], tf.int64))


def examples(n=6):
  rng = np.random.RandomState(1)
  out = []
  for _ in range(n):
    feats = {k: tf.train.Feature(float_list=tf.train.FloatList(
        value=[float(rng.uniform())])) for k in FEATURES}
    feats["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
    out.append(tf.train.Example(features=tf.train.Features(
        feature=feats)).SerializeToString())
  return out


def features_of(serialized):
  parsed = tf.io.parse_example(tf.constant(serialized), SPEC)
  return {k: v.numpy() for k, v in parsed.items()}


def write_trainer_model(model, path, keras_file=True):
  """As a Keras 3 Trainer module writes it: SavedModel + the one line."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(serialized):
    return {"outputs": model(tf.io.parse_example(serialized, SPEC))}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def transform(serialized):
    return tf.io.parse_example(serialized, LABELLED)

  tf.saved_model.save(model, path, signatures={
      "serving_default": serve.get_concrete_function(),
      "transform_features": transform.get_concrete_function()})
  if keras_file:
    model.save(os.path.join(path, "model.keras"))
  return path


@pytest.fixture(scope="module")
def trainer_dir(tmp_path_factory):
  return write_trainer_model(build(), str(tmp_path_factory.mktemp("k3") / "sm"))


def test_model_keras_loads_with_keras3(trainer_dir):
  assert model_io.model_kind(trainer_dir) == "keras3"
  model = model_io.load_keras_model(trainer_dir)
  assert isinstance(model, keras.Model)
  x = features_of(examples())
  np.testing.assert_allclose(model(x), build()(x), rtol=1e-6)


def test_keras3_saved_model_without_model_keras_is_a_one_line_error(tmp_path):
  path = write_trainer_model(build(), str(tmp_path / "sm"), keras_file=False)
  with pytest.raises(model_io.ModelLoadError) as e:
    model_io.load_keras_model(path, "model")
  message = str(e.value)
  assert "\n" not in message
  assert "written from a Keras 3 model" in message
  assert ('model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))'
          in message)


def test_same_shapes_keep_the_trainers_signatures_with_new_weights(
    trainer_dir, tmp_path):
  pruned = model_io.load_keras_model(trainer_dir)
  kernel = pruned.get_layer("hidden").kernel
  kernel.assign(np.where(np.abs(kernel.numpy()) < 0.3, 0.0, kernel.numpy()))
  out = str(tmp_path / "out")
  info = keras3_export.export_keras3(pruned, trainer_dir, out,
                                     sample_serialized_examples=examples(),
                                     label_key="label")
  assert info["method"] == "assigned"
  saved = tf.saved_model.load(out)
  original = tf.saved_model.load(trainer_dir)
  assert set(saved.signatures) == {"serving_default", "transform_features"}
  for name in saved.signatures:
    assert (keras3_export.signature_specs(saved.signatures[name])
            == keras3_export.signature_specs(original.signatures[name]))
  got = saved.signatures["serving_default"](examples=tf.constant(examples()))
  np.testing.assert_allclose(got["outputs"], pruned(features_of(examples())),
                             rtol=1e-5)
  assert not np.allclose(got["outputs"], original.signatures["serving_default"](
      examples=tf.constant(examples()))["outputs"])
  reloaded = model_io.load_keras_model(out)
  np.testing.assert_array_equal(reloaded.get_layer("hidden").kernel.numpy(),
                                kernel.numpy())


def test_new_shapes_recreate_the_signatures(trainer_dir, tmp_path):
  narrow = build(hidden=4, seed=3)
  out = str(tmp_path / "out")
  info = keras3_export.export_keras3(narrow, trainer_dir, out,
                                     sample_serialized_examples=examples(),
                                     label_key="label")
  assert info["method"] == "regenerated"
  assert info["regenerated"] == ["serving_default"]
  assert info["kept"] == ["transform_features"]
  saved = tf.saved_model.load(out)
  original = tf.saved_model.load(trainer_dir)
  for name in original.signatures:
    assert (keras3_export.signature_specs(saved.signatures[name])
            == keras3_export.signature_specs(original.signatures[name]))
  got = saved.signatures["serving_default"](examples=tf.constant(examples()))
  np.testing.assert_allclose(got["outputs"], narrow(features_of(examples())),
                             rtol=1e-5)
  assert model_io.load_keras_model(out).get_layer("hidden").units == 4


def test_a_tf_keras_model_is_refused(trainer_dir, tmp_path):
  import tf_keras  # pylint: disable=g-import-not-at-top
  model = tf_keras.Sequential([tf_keras.Input((1,)), tf_keras.layers.Dense(1)])
  with pytest.raises(TypeError, match="must be a Keras 3 model, got tf_keras"):
    keras3_export.export_keras3(model, trainer_dir, str(tmp_path / "out"))


def sequential(units=4, seed=0):
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.Input((3,), name="x"), keras.layers.Dense(units, name="d"),
      keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(2, name="o")])
  model.compile(optimizer="adam", loss="mse")
  model.fit(np.random.RandomState(0).rand(32, 3), np.zeros((32, 2)), verbose=0)
  return model


@pytest.mark.parametrize("units,method", [(4, "assigned"), (2, "regenerated")])
def test_sequential_with_batchnorm_and_a_tensor_signature(tmp_path, units, method):
  model = sequential()

  @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
  def serve(x):
    return {"y": model(x)}

  src = str(tmp_path / "sm")
  tf.saved_model.save(model, src, signatures={
      "serving_default": serve.get_concrete_function()})
  model.save(os.path.join(src, "model.keras"))
  new = model_io.load_keras_model(src) if units == 4 else sequential(units, 1)
  kernel = new.get_layer("d").kernel
  kernel.assign(np.where(np.abs(kernel.numpy()) < 0.4, 0.0, kernel.numpy()))
  info = keras3_export.export_keras3(new, src, str(tmp_path / "out"))
  assert info["method"] == method
  x = tf.constant(np.random.RandomState(2).rand(5, 3).astype("float32"))
  got = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"](x=x)
  np.testing.assert_allclose(got["y"], new(x, training=False), rtol=1e-5,
                             atol=1e-6)
