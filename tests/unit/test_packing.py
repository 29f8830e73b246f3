"""One packed TFLite input (Quantizer pack_inputs=1): the cut, the order, the errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.components.common import tflite_packing
from tfx_compression.components.quantizer import quantization
from tfx_compression.components.quantizer.config import QuantizerConfig


def shuffled_concat_model(seed=0):
  """Inputs declared a, b, c (c two wide) but joined c, a, b: order must follow."""
  keras.utils.set_random_seed(seed)
  a = keras.Input((1,), name="a")
  b = keras.Input((1,), name="b")
  c = keras.Input((2,), name="c")
  x = keras.layers.Concatenate(name="join")([c, a, b])
  x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
  out = keras.layers.Dense(3, activation="softmax", name="scores")(x)
  return keras.Model({"a": a, "b": b, "c": c}, out)


def features(n=32, seed=0):
  rng = np.random.default_rng(seed)
  return {"a": rng.normal(size=(n, 1)).astype(np.float32),
          "b": rng.normal(size=(n, 1)).astype(np.float32),
          "c": rng.normal(size=(n, 2)).astype(np.float32)}


def test_packed_model_computes_what_the_model_computes():
  model = shuffled_concat_model()
  packed = tflite_packing.pack_inputs(model)
  assert packed.features == ["c", "a", "b"] and packed.widths == [2, 1, 1]
  assert packed.concatenate == "join"
  feats = features()
  np.testing.assert_allclose(
      packed.model({tflite_packing.PACKED_INPUT: packed.pack(feats)}).numpy(),
      model(feats).numpy(), atol=1e-6)
  # The layers are shared, not copied: the packed model has the same weights.
  assert packed.model.count_params() == model.count_params()


@pytest.mark.parametrize("mode", ["float16", "int8"])
def test_quantizer_packs_and_the_evaluator_feeds_it(mode):
  model = shuffled_concat_model()
  feats = features(64)
  labels = np.argmax(model(feats).numpy(), -1)
  batches = [(features(8, seed=s), labels[:8]) for s in range(8)]
  plain = quantization.quantize(
      model, QuantizerConfig(quantization=mode, num_representative_samples=32),
      batches, measure_float=False)
  packed = quantization.quantize(
      model, QuantizerConfig(quantization=mode, num_representative_samples=32,
                             pack_inputs=1), batches, measure_float=False)
  assert [i["name"] for i in packed.io["inputs"]] == [tflite_packing.PACKED_INPUT]
  assert packed.io["inputs"][0]["shape"] == [1, 4]
  assert packed.io["packed"]["features"] == ["c", "a", "b"]
  ops = {o["op_name"] for o in tf.lite.Interpreter(
      model_content=packed.tflite_model)._get_ops_details()}  # pylint: disable=protected-access
  assert "CONCATENATION" not in ops
  assert packed.stats["tflite_bytes"] < plain.stats["tflite_bytes"]
  # The evaluator reads the order from tflite_io.json and packs by itself.
  got = evaluation.TFLitePredictor(model_content=packed.tflite_model,
                                   io=packed.io).predict(feats)
  want = evaluation.TFLitePredictor(model_content=plain.tflite_model,
                                    io=plain.io).predict(feats)
  tolerance = 0.02 if mode == "int8" else 1e-3
  np.testing.assert_allclose(got, want, atol=tolerance)
  keras_scores = model(feats).numpy()
  if mode == "int8":  # int8 rounding moves scores by a few hundredths
    assert np.mean(np.argmax(got, -1) == np.argmax(keras_scores, -1)) >= 0.9
  else:
    np.testing.assert_allclose(got, keras_scores, atol=1e-2)


def two_branch_model():
  a = keras.Input((1,), name="a")
  b = keras.Input((1,), name="b")
  x = keras.layers.Concatenate()([keras.layers.Dense(2, name="da")(a), b])
  return keras.Model({"a": a, "b": b}, keras.layers.Dense(2, name="out")(x))


def reused_input_model():
  a = keras.Input((1,), name="a")
  b = keras.Input((1,), name="b")
  x = keras.layers.Concatenate()([a, b])
  y = keras.layers.Add()([keras.layers.Dense(1)(x), a])
  return keras.Model({"a": a, "b": b}, y)


def int_input_model():
  a = keras.Input((1,), name="a", dtype=tf.int64)
  b = keras.Input((1,), name="b")
  x = keras.layers.Concatenate()([tf.cast(a, tf.float32), b])
  return keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(x))


@pytest.mark.parametrize("build,needle", [
    (two_branch_model, "not into one Concatenate"),
    (reused_input_model, "input 'a' feeds 2 layers"),
    (int_input_model, "input 'a' is int64"),
    (lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
     "single input already"),
])
def test_models_that_cannot_be_packed_say_why(build, needle):
  with pytest.raises(tflite_packing.PackingError, match=needle) as e:
    tflite_packing.pack_inputs(build())
  assert "`pack_inputs`" in str(e.value) and "Leave `pack_inputs`=0" in str(e.value)


def test_quantize_with_pack_inputs_on_an_unpackable_model_fails_clearly():
  with pytest.raises(tflite_packing.PackingError, match="pack_inputs"):
    quantization.quantize(two_branch_model(),
                          QuantizerConfig(quantization="dynamic", pack_inputs=1),
                          measure_float=False)


@pytest.mark.parametrize("value,error", [(2, ValueError), ("yes", TypeError)])
def test_pack_inputs_must_be_0_or_1(value, error):
  with pytest.raises(error, match="`pack_inputs`"):
    QuantizerConfig(quantization="int8", pack_inputs=value)
