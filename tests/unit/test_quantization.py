"""Tests for the Quantizer's config and its pure function (quantization.py).

Tiny seeded models for the rules; the demo CNN (session fixture) for every mode's
accuracy and size, since that is what the README reports.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import features
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import tflite_convert
from tfx_compression.components.quantizer import quantization
from tfx_compression.components.quantizer.config import MODES
from tfx_compression.components.quantizer.config import QuantizerConfig
from tests import fixtures


# --------------------------------------------------------------------- helpers

def tiny_model(seed: int = 0, names=("a", "b", "c")) -> keras.Model:
  """Three named scalar features -> Dense 8 -> softmax over 3 classes."""
  return fixtures.tiny_features_model(names, classes=3, seed=seed)


def tiny_batches(n: int = 64, seed: int = 0, names=("a", "b", "c")):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, len(names))).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0).astype(np.int64)
  feats = {k: x[:, i:i + 1] for i, k in enumerate(names)}
  return feats, y


def tiny_dataset(n: int = 64, batch: int = 8, repeat: bool = False):
  feats, y = tiny_batches(n)
  ds = tf.data.Dataset.from_tensor_slices((feats, y)).batch(batch)
  return ds.repeat() if repeat else ds


def run_tflite(flatbuffer: bytes, io: dict, feats: dict) -> np.ndarray:
  """Runs a TFLite model one example at a time, as a device would (batch 1).

  Integer inputs are quantized and integer outputs dequantized with the
  parameters recorded in ``io``, which is what the README tells a device to do.
  """
  interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
  runner = interpreter.get_signature_runner(io["signature_key"])
  in_by_name = {i["name"]: i for i in io["inputs"]}
  (out,) = io["outputs"]
  n = len(next(iter(feats.values())))
  results = []
  for row in range(n):
    kwargs = {}
    for name, value in feats.items():
      spec = in_by_name[name]
      x = np.asarray(value[row:row + 1], np.float32)
      if spec["dtype"] != "float32":
        q = spec["quantization"]
        info = np.iinfo(spec["dtype"])
        x = np.clip(np.round(x / q["scale"] + q["zero_point"]), info.min,
                    info.max)
      kwargs[name] = x.astype(spec["dtype"])
    y = runner(**kwargs)[out["name"]]
    if out["dtype"] != "float32":
      q = out["quantization"]
      y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
    results.append(y[0])
  return np.stack(results)


def assert_sparsity_close(actual: float, expected: float, points: float = 0.01):
  assert abs(actual - expected) <= points, (
      f"sparsity {actual:.4f} is not within {points:.2f} of {expected:.4f}")


# ---------------------------------------------------------------------- config

class TestConfig:

  def test_unknown_mode_lists_the_valid_ones(self):
    with pytest.raises(ValueError) as e:
      QuantizerConfig(quantization="int4")
    msg = str(e.value)
    assert "`quantization`='int4'" in msg
    for mode in MODES:
      assert f"'{mode}'" in msg

  def test_mode_is_normalised(self):
    assert QuantizerConfig(quantization=" Float16 ").quantization == "float16"

  def test_mode_type(self):
    with pytest.raises(TypeError, match="quantization"):
      QuantizerConfig(quantization=8)

  @pytest.mark.parametrize("mode", ["int8", "int16x8", "qat"])
  def test_zero_representative_samples_for_data_modes(self, mode):
    with pytest.raises(ValueError, match=r"num_representative_samples`=0.*"
                       + mode):
      QuantizerConfig(quantization=mode, label_key="label",
                      num_representative_samples=0)

  def test_zero_samples_fine_without_calibration(self):
    assert QuantizerConfig(quantization="dynamic",
                           num_representative_samples=0)

  def test_int8_io_only_for_integer_modes(self):
    with pytest.raises(ValueError, match="`int8_io_type`='int8'.*'dynamic'"):
      QuantizerConfig(quantization="dynamic", int8_io_type="int8")
    assert QuantizerConfig(quantization="qat", label_key="y",
                           int8_io_type="uint8").int8_io_type == "uint8"

  def test_unknown_io_type(self):
    with pytest.raises(ValueError, match="int8_io_type.*int4"):
      QuantizerConfig(quantization="int8", int8_io_type="int4")

  def test_qat_needs_label_key(self):
    with pytest.raises(ValueError, match="label_key.*qat"):
      QuantizerConfig(quantization="qat")

  @pytest.mark.parametrize("kwargs,error,match", [
      (dict(qat_steps=0), ValueError, "qat_steps"),
      (dict(batch_size=2.5), TypeError, "batch_size"),
      (dict(learning_rate=0.0), ValueError, "learning_rate"),
      (dict(learning_rate="1e-4"), TypeError, "learning_rate"),
      (dict(allow_select_ops=2), ValueError, "allow_select_ops"),
      (dict(allow_select_ops="yes"), TypeError, "allow_select_ops"),
      (dict(seed=-1), ValueError, "seed"),
      (dict(label_key=""), TypeError, "label_key"),
  ])
  def test_bad_values_name_the_parameter(self, kwargs, error, match):
    with pytest.raises(error, match=match):
      QuantizerConfig(**kwargs)

  def test_examples_required_for_data_modes(self):
    with pytest.raises(ValueError, match="`examples` is not set"):
      QuantizerConfig(quantization="int8").require_examples(False)
    with pytest.raises(ValueError, match="`schema`"):
      QuantizerConfig(quantization="int8").require_examples(True, False)
    QuantizerConfig(quantization="float16").require_examples(False, False)

  def test_from_parameters_skips_unset(self):
    c = QuantizerConfig.from_parameters(
        {"quantization": "int8", "label_key": None, "seed": 3, "other": 1})
    assert (c.quantization, c.label_key, c.seed) == ("int8", None, 3)

  @pytest.mark.parametrize("name, value, allowed", [
      ("distillation_weight", -0.1, "outside [0, 1]"),
      ("distillation_weight", 1.5, "outside [0, 1]"),
      ("distillation_temperature", 0.0, "outside (0, 100]"),
      ("distillation_temperature", 500.0, "outside (0, 100]"),
  ])
  def test_distillation_checked_as_the_pruner_does(self, name, value, allowed):
    from tfx_compression.components.pruner.config import PrunerConfig  # pylint: disable=g-import-not-at-top
    with pytest.raises(ValueError) as quantizer_error:
      QuantizerConfig(quantization="qat", label_key="y", **{name: value})
    with pytest.raises(ValueError) as pruner_error:
      PrunerConfig(**{name: value})
    assert f"`{name}`={value!r} is {allowed}" in str(quantizer_error.value)
    assert str(quantizer_error.value) == str(pruner_error.value)

  def test_distillation_weight_type_and_mode(self):
    with pytest.raises(TypeError, match=r"`distillation_weight` must be a number"):
      QuantizerConfig(quantization="qat", label_key="y", distillation_weight="1")
    with pytest.raises(ValueError, match=r"`distillation_weight`=0.5 needs "
                       r"quantization='qat'.*quantization='int8' trains nothing"):
      QuantizerConfig(quantization="int8", distillation_weight=0.5)
    off = QuantizerConfig(quantization="int8", distillation_weight=0)
    on = QuantizerConfig.from_parameters(
        {"quantization": "qat", "label_key": "y", "distillation_weight": 1,
         "distillation_temperature": 4})
    assert (off.distills, on.distills) == (False, True)
    assert (on.distillation_weight, on.distillation_temperature) == (1.0, 4.0)


# ------------------------------------------------------------ tiny-model rules

class TestTinyModel:

  @pytest.mark.parametrize("mode", ["dynamic", "float16"])
  def test_data_free_modes_match_keras(self, mode):
    model = tiny_model()
    result = quantization.quantize(model, QuantizerConfig(quantization=mode),
                                   measure_float=False)
    feats, _ = tiny_batches(16)
    got = run_tflite(result.tflite_model, result.io, feats)
    np.testing.assert_allclose(got, model(feats).numpy(), atol=0.02)
    assert result.io["mode"] == mode
    assert result.io["preprocessing"] == "none"
    assert sorted(i["name"] for i in result.io["inputs"]) == ["a", "b", "c"]
    assert all(i["shape"] == [1, 1] for i in result.io["inputs"])
    assert [o["name"] for o in result.io["outputs"]] == ["scores"]

  @pytest.mark.parametrize("io_type", ["int8", "uint8"])
  def test_int8_io_types(self, io_type):
    model = tiny_model()
    config = QuantizerConfig(quantization="int8", int8_io_type=io_type,
                             num_representative_samples=64)
    result = quantization.quantize(model, config, tiny_dataset(),
                                   measure_float=False)
    for entry in result.io["inputs"] + result.io["outputs"]:
      assert entry["dtype"] == io_type
      if io_type != "float32":
        assert entry["quantization"]["scale"] > 0
    assert result.stats["representative_samples"] == 64
    feats, _ = tiny_batches(16)
    got = run_tflite(result.tflite_model, result.io, feats)
    np.testing.assert_allclose(got, model(feats).numpy(), atol=0.06)

  def test_int8_without_data(self):
    with pytest.raises(ValueError, match="int8.*examples"):
      quantization.quantize(tiny_model(), QuantizerConfig(quantization="int8"))

  def test_empty_representative_data(self):
    empty = tiny_dataset().take(0)
    with pytest.raises(ValueError, match="0 representative examples"):
      quantization.quantize(tiny_model(), QuantizerConfig(quantization="int8"),
                            empty)

  def test_tflite_input_is_refused(self):
    flatbuffer = tflite_convert.convert(tiny_model(), "float")
    with pytest.raises(TypeError, match="already a TFLite"):
      quantization.quantize(flatbuffer, QuantizerConfig())

  def test_sequential_single_input(self):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape=(4,), name="x"),
                              keras.layers.Dense(2, name="out")])
    result = quantization.quantize(model, QuantizerConfig(), measure_float=False)
    (entry,) = result.io["inputs"]
    assert entry["name"] == "x" and entry["shape"] == [1, 4]
    x = np.arange(4, dtype=np.float32)[None]
    got = run_tflite(result.tflite_model, result.io, {"x": x})
    np.testing.assert_allclose(got, model(x).numpy(), atol=0.05)

  def test_weight_sparsity_read_from_the_flatbuffer(self):
    model = tiny_model()
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :4] = 0.0  # half the hidden kernel
    model.get_layer("hidden").set_weights([kernel, bias])
    expected = model_stats.sparsity_stats(model)["sparsity"]
    assert expected == pytest.approx(0.25)  # 12 of the 48 kernel weights
    exact = tflite_convert.tflite_weight_sparsity(
        tflite_convert.convert(model, "float"))
    assert exact["weight_count"] == model_stats.sparsity_stats(
        model)["kernel_param_count"]
    assert exact["sparsity"] == pytest.approx(expected)
    for mode in ("float16", "dynamic"):  # DEQUANTIZE-fed and int8 weights
      got = tflite_convert.tflite_weight_sparsity(
          tflite_convert.convert(model, mode))["sparsity"]
      assert expected <= got <= expected + 0.05, mode

  def test_qat_leaves_the_input_alone_and_detects_logits(self):
    keras.utils.set_random_seed(0)
    inputs = {n: keras.Input(shape=(1,), name=n) for n in ("a", "b", "c")}
    x = keras.layers.Concatenate()(list(inputs.values()))
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    before = [w.copy() for w in model.get_weights()]
    layers = list(model.layers)
    config = QuantizerConfig(quantization="qat", label_key="y", qat_steps=3,
                             batch_size=8, num_representative_samples=16)
    result = quantization.quantize(model, config, tiny_dataset(),
                                   tiny_dataset(repeat=True),
                                   measure_float=False)
    assert result.stats["qat_scheme"] == "default_8bit"
    assert result.stats["qat_annotated_layers"] == "hidden,logits"
    # Uncompiled, with logits out: the fallback loss must take logits.
    assert result.stats["qat_loss"] == (
        "sparse_categorical_crossentropy(from_logits=True)")
    assert np.isfinite(result.stats["qat_final_loss"])
    assert list(model.layers) == layers
    fixtures.assert_same_weights(before, model.get_weights())


class TestQatDistillation:
  """QAT towards the frozen input model (common/distillation.py)."""

  @staticmethod
  def _qat(model, **kw):
    config = QuantizerConfig(quantization="qat", label_key="y", qat_steps=4,
                             batch_size=8, num_representative_samples=16, **kw)
    qat_model, stats = quantization._quantization_aware_model(  # pylint: disable=protected-access
        model, config, tiny_dataset(repeat=True), input_sparsity=0.0)
    return qat_model.get_weights(), stats

  def test_weight_zero_is_todays_qat_bit_for_bit(self, monkeypatch):
    plain, plain_stats = self._qat(tiny_model())

    def no_teacher(*args, **kwargs):
      raise AssertionError("weight 0 built a teacher")
    # Off means off: no teacher copy, no extra forward pass per batch.
    monkeypatch.setattr(quantization.distillation, "for_model", no_teacher)
    zero, zero_stats = self._qat(tiny_model(), distillation_weight=0.0,
                                 distillation_temperature=4.0)
    fixtures.assert_same_weights(plain, zero)
    assert plain_stats == zero_stats

  def test_positive_weight_distills_and_leaves_the_input_alone(self):
    model = tiny_model()
    before = [w.copy() for w in model.get_weights()]
    plain, _ = self._qat(model)
    distilled, stats = self._qat(model, distillation_weight=0.7,
                                 distillation_temperature=3.0)
    assert len(plain) == len(distilled)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, distilled))
    assert np.isfinite(stats["qat_final_loss"])
    assert (stats["qat_distillation_weight"],
            stats["qat_distillation_temperature"]) == (0.7, 3.0)
    fixtures.assert_same_weights(before, model.get_weights())
    assert model.trainable  # the teacher frozen was a copy

  def test_quantize_with_distillation_converts(self):
    config = QuantizerConfig(quantization="qat", label_key="y", qat_steps=3,
                             batch_size=8, num_representative_samples=16,
                             distillation_weight=0.5)
    result = quantization.quantize(tiny_model(), config, tiny_dataset(),
                                   tiny_dataset(repeat=True),
                                   measure_float=False)
    assert result.stats["qat_distillation_weight"] == 0.5
    assert result.tflite_model


def _write_missing_label_examples(path: str, n: int = 12) -> None:
  with tf.io.TFRecordWriter(path) as w:
    for i in range(n):
      feats = {k: tf.train.Feature(float_list=tf.train.FloatList(value=[i]))
               for k in ("a", "b", "c")}
      if i % 2:  # every other example has no label
        feats["y"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
      w.write(tf.train.Example(features=tf.train.Features(
          feature=feats)).SerializeToString())


def test_qat_refuses_examples_without_a_label_in_one_line(tmp_path):
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "train.tfrecord")
  _write_missing_label_examples(path)
  spec = {k: tf.io.FixedLenFeature([1], tf.float32) for k in ("a", "b", "c")}
  spec["y"] = tf.io.VarLenFeature(tf.int64)  # SchemaGen on empty label cells
  schema = schema_utils.schema_from_feature_spec(spec)
  qat = QuantizerConfig(quantization="qat", label_key="y",
                        num_representative_samples=4)
  with pytest.raises(features.DataError,
                     match=r"^6 of 12 examples of the 'train' split have no "
                     r"value for `label_key`='y'.*Drop or label those rows"):
    quantization.example_data([path], schema, tiny_model(), qat)
  # Calibration reads no label: int8 on the same examples is fine.
  representative, train = quantization.example_data(
      [path], schema, tiny_model(), QuantizerConfig(
          quantization="int8", label_key="y", num_representative_samples=4))
  assert train is None and len(list(representative)) == 4


def matrix_inverse_model() -> keras.Model:
  """Uses tf.linalg.inv (MatrixInverse), which is not a TFLite builtin."""
  keras.utils.set_random_seed(0)
  inputs = {n: keras.Input(shape=(2,), name=n) for n in ("a", "b")}
  x = keras.layers.Concatenate()(list(inputs.values()))
  x = keras.layers.Dense(4, name="dense")(x)
  x = keras.layers.Lambda(lambda t: tf.linalg.inv(
      tf.reshape(t, [-1, 2, 2]) + 3.0 * tf.eye(2)))(x)
  out = keras.layers.Flatten()(x)
  return keras.Model(inputs, out)


class TestUnconvertible:

  def test_names_the_ops_and_the_option(self):
    with pytest.raises(tflite_convert.ConversionError) as e:
      quantization.quantize(matrix_inverse_model(),
                            QuantizerConfig(quantization="dynamic"))
    msg = str(e.value)
    assert "tf.MatrixInverse" in msg
    assert "`allow_select_ops`=1" in msg
    assert "quantization='dynamic'" in msg

  def test_select_ops_convert_it(self):
    model = matrix_inverse_model()
    result = quantization.quantize(
        model, QuantizerConfig(quantization="float16", allow_select_ops=1),
        measure_float=False)
    feats = {"a": np.array([[1.0, 2.0]], np.float32),
             "b": np.array([[0.5, -1.0]], np.float32)}
    try:
      got = run_tflite(result.tflite_model, result.io, feats)
    except RuntimeError as e:
      # TensorFlow >= 2.20 ships its Python TFLite runtimes without the Flex
      # delegate: the model converts, but only a device that links Flex runs it.
      if "Select TensorFlow op" in str(e) and _tf_at_least(2, 20):
        pytest.skip("this TensorFlow's Python TFLite runtime has no Flex "
                    "delegate (TF >= 2.20): the converted model cannot run here")
      raise
    np.testing.assert_allclose(got, model(feats).numpy(), atol=1e-2)

  def test_evaluator_names_select_ops_it_cannot_run(self):
    from tfx_compression.components.compression_evaluator import predictors  # pylint: disable=g-import-not-at-top
    model = matrix_inverse_model()
    result = quantization.quantize(
        model, QuantizerConfig(quantization="float16", allow_select_ops=1),
        measure_float=False)
    if not _tf_at_least(2, 20):
      # The runtime here links Flex: the evaluator runs the model.
      predictors.TFLitePredictor(model_content=result.tflite_model,
                                 io=result.io, role="candidate")
      return
    with pytest.raises(predictors.EvaluationError,
                       match=r"`candidate_model` .* select \(Flex\) ops"):
      predictors.TFLitePredictor(model_content=result.tflite_model,
                                 io=result.io, role="candidate")


def _tf_at_least(major: int, minor: int) -> bool:
  version = tuple(int(p) for p in tf.__version__.split(".")[:2])
  return version >= (major, minor)


# ------------------------------------------------------- every mode, demo CNN

@pytest.fixture(scope="module")
def digits_data(examples_artifact, trained_model):
  """Decoded eval examples, the float model's accuracy and float TFLite size."""
  decoder = features.ExampleDecoder(
      fixtures.schema_proto(), "label",
      features.keras_input_specs(trained_model))
  pattern = os.path.join(examples_artifact.uri, "Split-eval", "*")
  feats, labels = {}, []
  for f, y in decoder.dataset([pattern], batch_size=256):
    for k, v in f.items():
      feats.setdefault(k, []).append(v.numpy())
    labels.append(y.numpy())
  feats = {k: np.concatenate(v) for k, v in feats.items()}
  labels = np.concatenate(labels)
  keras_accuracy = float(np.mean(
      np.argmax(trained_model.predict(feats, verbose=0), -1) == labels))
  float_bytes = len(tflite_convert.convert(trained_model, "float"))
  return {"features": feats, "labels": labels,
          "keras_accuracy": keras_accuracy, "float_bytes": float_bytes,
          "train": [os.path.join(examples_artifact.uri, "Split-train", "*")]}


def accuracy(result, data) -> float:
  probs = run_tflite(result.tflite_model, result.io, data["features"])
  return float(np.mean(np.argmax(probs, -1) == data["labels"]))


# Size relative to the float TFLite model, from the README's table.
SIZE_RATIO = {"dynamic": (0.2, 0.32), "float16": (0.45, 0.55),
              "int8": (0.2, 0.32), "int16x8": (0.2, 0.32), "qat": (0.2, 0.32)}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_on_the_demo_cnn(mode, trained_model, digits_data,
                                    record_property):
  config = QuantizerConfig(quantization=mode, label_key="label",
                           qat_steps=30, num_representative_samples=100)
  representative, train = quantization.example_data(
      digits_data["train"], fixtures.schema_proto(), trained_model, config)
  result = quantization.quantize(trained_model, config, representative, train,
                                 measure_float=False)
  acc = accuracy(result, digits_data)
  ratio = result.stats["tflite_bytes"] / digits_data["float_bytes"]
  record_property(f"{mode}_accuracy", acc)
  record_property(f"{mode}_size_ratio", ratio)
  print(f"{mode}: accuracy {acc:.4f} (keras "
        f"{digits_data['keras_accuracy']:.4f}), {result.stats['tflite_bytes']} "
        f"bytes = {ratio:.3f} x float")
  assert acc >= digits_data["keras_accuracy"] - 0.03
  low, high = SIZE_RATIO[mode]
  assert low <= ratio <= high
  assert result.stats["tflite_gzip_bytes"] < result.stats["tflite_bytes"]
  assert result.stats["representative_samples"] == (
      100 if mode in ("int8", "int16x8", "qat") else 0)
  assert result.stats["input_sparsity"] == pytest.approx(0.0, abs=1e-3)
  assert 0.0 <= result.stats["sparsity"] < 0.02  # int8 rounding adds a few
  assert sorted(i["name"] for i in result.io["inputs"]) == fixtures.FEATURES


def magnitude_pruned_copy(model, sparsity: float) -> keras.Model:
  """A copy with the smallest |w| of each Conv/Dense kernel set to zero."""
  pruned = keras.models.clone_model(model)
  pruned.set_weights(model.get_weights())
  for layer in pruned.layers:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      kernel, bias = layer.get_weights()
      kernel[np.abs(kernel) < np.quantile(np.abs(kernel), sparsity)] = 0.0
      layer.set_weights([kernel, bias])
  return pruned


def test_qat_keeps_the_sparsity_of_a_pruned_input(trained_model, digits_data,
                                                  record_property):
  pruned = magnitude_pruned_copy(trained_model, 0.8)
  input_sparsity = model_stats.sparsity_stats(pruned)["sparsity"]
  assert_sparsity_close(input_sparsity, 0.8)
  config = QuantizerConfig(quantization="qat", label_key="label",
                           qat_steps=40, num_representative_samples=100)
  representative, train = quantization.example_data(
      digits_data["train"], fixtures.schema_proto(), pruned, config)
  result = quantization.quantize(pruned, config, representative, train,
                                 measure_float=False)
  assert result.stats["qat_scheme"] == "prune_preserve"
  # The clone is uncompiled, and its softmax output is seen as probabilities.
  assert result.stats["qat_loss"] == (
      "sparse_categorical_crossentropy(from_logits=False)")
  assert result.stats["input_sparsity"] == pytest.approx(input_sparsity)
  assert_sparsity_close(result.stats["sparsity"], input_sparsity)
  acc = accuracy(result, digits_data)
  record_property("qat_pruned_accuracy", acc)
  record_property("qat_pruned_sparsity", result.stats["sparsity"])
  assert acc > 0.7
