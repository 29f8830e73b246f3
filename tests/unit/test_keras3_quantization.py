"""The Quantizer's pure function on Keras 3 models: every mode but QAT, pack_inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.common import tflite_packing
from tfx_compression.components.quantizer import quantization
from tfx_compression.components.quantizer.config import QuantizerConfig

NAMES = ("a", "b", "c")


def model3(seed=0, with_pool=False):
  """Three named scalar features -> Concatenate -> Dense 16 -> softmax 3 (Keras 3)."""
  keras.utils.set_random_seed(seed)
  inputs = {n: keras.Input(shape=(1,), name=n) for n in NAMES}
  x = keras.layers.Concatenate(name="joined")(list(inputs.values()))
  x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
  out = keras.layers.Dense(3, activation="softmax", name="scores")(x)
  model = keras.Model(inputs, out)
  feats, y = data(256)
  model.compile(optimizer=keras.optimizers.Adam(0.05),
                loss="sparse_categorical_crossentropy")
  model.fit(feats, y, epochs=20, batch_size=32, verbose=0)
  del with_pool
  return model


def data(n=64, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, len(NAMES))).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
  return {k: x[:, i:i + 1] for i, k in enumerate(NAMES)}, y


def representative():
  feats, _ = data(64, seed=1)
  return tf.data.Dataset.from_tensor_slices(feats).batch(8)


def run_tflite(flatbuffer, io, feats):
  interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
  runner = interpreter.get_signature_runner(io["signature_key"])
  ins = {i["name"]: i for i in io["inputs"]}
  (out,) = io["outputs"]
  rows = []
  n = len(next(iter(feats.values())))
  for r in range(n):
    if io.get("packed"):
      row = {tflite_packing.PACKED_INPUT: tflite_packing.pack(
          {k: v[r:r + 1] for k, v in feats.items()}, io["packed"])}
    else:
      row = {k: v[r:r + 1] for k, v in feats.items()}
    kwargs = {}
    for name, value in row.items():
      spec = ins[name]
      value = value.astype(np.float32)
      if spec["dtype"] != "float32":
        q = spec["quantization"]
        value = np.round(value / q["scale"] + q["zero_point"])
      kwargs[name] = value.astype(spec["dtype"])
    got = runner(**kwargs)[out["name"]].astype(np.float64)
    if out["dtype"] != "float32":
      q = out["quantization"]
      got = (got - q["zero_point"]) * q["scale"]
    rows.append(got.reshape(1, -1))
  return np.concatenate(rows)


@pytest.fixture(scope="module")
def trained():
  return model3()


@pytest.mark.parametrize("mode,io_type,pack", [
    ("dynamic", "float32", 0), ("float16", "float32", 0),
    ("int8", "float32", 0), ("int8", "int8", 0), ("int8", "uint8", 0),
    ("int16x8", "float32", 0), ("int8", "int8", 1)])
def test_keras3_modes_agree_with_the_keras_model(trained, mode, io_type, pack):
  config = QuantizerConfig(quantization=mode, int8_io_type=io_type,
                           pack_inputs=pack, num_representative_samples=64)
  result = quantization.quantize(trained, config,
                                 representative_data=representative())
  feats, y = data(200, seed=2)
  want = np.asarray(trained(feats))
  got = run_tflite(result.tflite_model, result.io, feats)
  assert got.shape == want.shape
  # A saturated softmax flips on a boundary example: compare on average.
  tolerance = 0.01 if mode in ("dynamic", "float16") else 0.05
  assert np.mean(np.abs(got - want)) < tolerance, mode
  keras_acc = float(np.mean(np.argmax(want, 1) == y))
  assert abs(float(np.mean(np.argmax(got, 1) == y)) - keras_acc) <= 0.03
  assert result.io["inputs"][0]["dtype"] == ("float32" if mode != "int8" else
                                             io_type)
  if pack:
    assert [i["name"] for i in result.io["inputs"]] == [tflite_packing.PACKED_INPUT]
    assert result.io["packed"]["features"] == list(NAMES)
  else:
    assert sorted(i["name"] for i in result.io["inputs"]) == list(NAMES)
  float_bytes = result.stats["float_tflite_bytes"]
  assert result.stats["tflite_bytes"] > 0 and float_bytes > 0


def test_keras3_sparsity_is_measured_on_the_flatbuffer(trained):
  pruned = keras.models.clone_model(trained)
  pruned.set_weights(trained.get_weights())
  kernel = pruned.get_layer("hidden").kernel
  k = kernel.numpy()
  k[np.abs(k) < np.quantile(np.abs(k), 0.75)] = 0
  kernel.assign(k)
  result = quantization.quantize(
      pruned, QuantizerConfig(quantization="int8"),
      representative_data=representative())
  assert result.stats["input_sparsity"] == pytest.approx(36 / 96)
  assert result.stats["sparsity"] >= result.stats["input_sparsity"] - 0.01


def test_keras3_packed_model_computes_what_the_model_computes(trained):
  packed = tflite_packing.pack_inputs(trained)
  feats, _ = data(16)
  np.testing.assert_allclose(
      packed.model({tflite_packing.PACKED_INPUT: packed.pack(feats)}),
      trained(feats), rtol=1e-5, atol=1e-6)


def test_keras3_unpackable_model_says_why():
  inputs = {n: keras.Input(shape=(1,), name=n) for n in NAMES}
  x = keras.layers.Add()(list(inputs.values()))
  model = keras.Model(inputs, keras.layers.Dense(2)(x))
  with pytest.raises(tflite_packing.PackingError, match="not into one Concatenate"):
    tflite_packing.pack_inputs(model)


def test_qat_on_keras3_is_refused_naming_int8(trained):
  config = QuantizerConfig(quantization="qat", label_key="label")
  with pytest.raises(ValueError) as e:
    quantization.quantize(trained, config, representative_data=representative(),
                          train_data=tf.data.Dataset.from_tensor_slices(
                              data(32)).batch(8).repeat())
  message = str(e.value)
  assert "\n" not in message
  assert "Keras 3" in message and "quantization='int8'" in message
