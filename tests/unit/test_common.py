"""Tests for the shared helpers: thresholds, sizes and sparsity, decoding, loading."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.common import features, model_io, model_stats, thresholds
from tests import fixtures


class TestThresholds:

  def test_needs_a_quality_threshold(self):
    with pytest.raises(ValueError, match="max_drop"):
      thresholds.GateThresholds(metric="accuracy")

  def test_unknown_metric_lists_known(self):
    with pytest.raises(ValueError, match="accuracy.*"):
      thresholds.GateThresholds(metric="acuracy", max_drop=0.01)

  @pytest.mark.parametrize("kwargs,match", [
      (dict(max_drop=-0.1), "max_drop"),
      (dict(max_relative_drop=1.5), "max_relative_drop"),
      (dict(min_value=-0.5), "min_value"),
      (dict(max_drop=0.01, min_compression_ratio=0), "min_compression_ratio"),
      (dict(max_drop=0.01, max_latency_ratio=-1), "max_latency_ratio"),
      (dict(metric="crossentropy", min_value=0.1), "contradicts"),
  ])
  def test_bad_values_name_the_parameter(self, kwargs, match):
    with pytest.raises(ValueError, match=match):
      thresholds.GateThresholds(**kwargs)

  def test_bad_type(self):
    with pytest.raises(TypeError, match="max_drop"):
      thresholds.GateThresholds(max_drop="0.01")

  def test_drop_within_limit_passes(self):
    t = thresholds.GateThresholds(max_drop=0.01)
    checks = t.check({"accuracy": 0.97}, {"accuracy": 0.961})
    assert [c.passed for c in checks] == [True]

  def test_drop_over_limit_fails_with_reason(self):
    t = thresholds.GateThresholds(max_drop=0.01, min_value=0.5)
    checks = t.check({"accuracy": 0.97}, {"accuracy": 0.95})
    assert [c.passed for c in checks] == [False, True]
    sentence = thresholds.verdict_sentence(checks)
    assert sentence.startswith("NOT BLESSED") and "max_drop" in sentence

  def test_nan_never_passes(self):
    t = thresholds.GateThresholds(max_drop=0.99, max_relative_drop=0.9,
                                  min_value=0.0)
    checks = t.check({"accuracy": 0.9}, {"accuracy": float("nan")})
    assert not any(c.passed for c in checks)

  def test_lower_is_better_metric(self):
    t = thresholds.GateThresholds(metric="loss", max_drop=0.05)
    assert t.metric == "crossentropy"
    assert t.check({"crossentropy": 0.10}, {"crossentropy": 0.14})[0].passed
    assert not t.check({"crossentropy": 0.10}, {"crossentropy": 0.20})[0].passed

  def test_efficiency_checks(self):
    t = thresholds.GateThresholds(max_drop=0.01, min_compression_ratio=4,
                                  max_latency_ratio=1.0)
    checks = t.check({"accuracy": 0.9}, {"accuracy": 0.9},
                     compression_ratio=3.0, latency_ratio=0.5)
    assert [c.name for c in checks if not c.passed] == ["min_compression_ratio"]


class TestModelStats:

  def test_sparsity_counts_kernels(self):
    import tf_keras as keras
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    k, b = m.layers[0].get_weights()
    k[:2] = 0
    m.layers[0].set_weights([k, b])
    stats = model_stats.sparsity_stats(m)
    assert stats["sparsity"] == pytest.approx(0.5)
    assert stats["param_count"] == 20
    assert stats["zero_count"] == 8 + 4  # zeroed kernel rows + zero biases

  def test_gzip_shrinks_zeros(self):
    zeros = np.zeros(10000, np.float32)
    rand = np.random.default_rng(0).normal(size=10000).astype(np.float32)
    assert model_stats.weights_gzip_bytes([zeros]) < model_stats.weights_gzip_bytes([rand]) / 10

  def test_streamed_gzip_is_the_gzip_of_the_concatenation(self):
    """One array at a time, the size gzip_bytes gives the arrays end to end."""
    rng = np.random.default_rng(0)
    sparse = rng.normal(size=(30, 40)).astype(np.float32)
    sparse[np.abs(sparse) < 0.8] = 0
    arrays = [rng.normal(size=100).astype(np.float32), sparse,
              np.asfortranarray(rng.normal(size=(7, 9))),  # float64, F order
              np.float32(3.5) * np.ones(()), np.zeros((0, 4), np.float32),
              rng.integers(0, 9, size=50)]
    joined = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    expected = model_stats.gzip_bytes(joined)
    assert model_stats.weights_gzip_bytes(arrays) == expected
    assert model_stats.weights_gzip_bytes(iter(arrays)) == expected

  def test_file_gzip_is_the_gzip_of_the_files_in_order(self, tmp_path):
    """A file, or a directory's files in sorted order, read a MiB at a time."""
    rng = np.random.default_rng(1)
    big = rng.integers(0, 4, size=3 * (1 << 20) + 5, dtype=np.uint8).tobytes()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "variables.data").write_bytes(big)
    (tmp_path / "a.pb").write_bytes(b"graph" * 1000)
    (tmp_path / "empty").write_bytes(b"")
    assert model_stats.gzip_file_bytes(str(tmp_path / "b" / "variables.data")) == (
        model_stats.gzip_bytes(big))
    # os.walk order: the root's files sorted, then sub-directories sorted.
    assert model_stats.gzip_file_bytes(str(tmp_path)) == model_stats.gzip_bytes(
        b"graph" * 1000 + big)

  def test_model_weights_are_get_weights_one_at_a_time(self):
    model = fixtures.tiny_model()
    streamed = model_stats.model_weights(model)
    assert not isinstance(streamed, list)
    fixtures.assert_same_weights(list(streamed), model.get_weights())


class TestDecoderAndLoading:

  def test_decodes_examples_into_model_inputs(self, examples_artifact, model_artifact):
    model = model_io.load_keras_model(model_io.serving_dir(model_artifact.uri))
    dec = features.ExampleDecoder(fixtures.schema_proto(), "label",
                                  features.keras_input_specs(model))
    ds = dec.dataset([os.path.join(examples_artifact.uri, "Split-eval", "*")],
                     batch_size=8)
    feats, label = next(iter(ds))
    assert set(feats) == set(fixtures.FEATURES)
    assert feats["pixel_00"].shape == (8, 1) and feats["pixel_00"].dtype == tf.float32
    assert label.shape == (8,)
    probs = model(feats)
    assert probs.shape == (8, 10)

  def test_missing_label_names_it(self, model_artifact):
    model = model_io.load_keras_model(model_io.serving_dir(model_artifact.uri))
    with pytest.raises(features.DataError, match="'lable'"):
      features.ExampleDecoder(fixtures.schema_proto(), "lable",
                              features.keras_input_specs(model))

  def test_empty_split_is_an_error(self, tmp_path):
    d = tmp_path / "Split-train"
    d.mkdir()
    with tf.io.TFRecordWriter(str(d / "data.gz"), options="GZIP"):
      pass
    with pytest.raises(features.DataError, match="empty"):
      features.list_files([str(d / "*")], "train")

  def test_loading_refuses_non_keras(self, tmp_path):
    class M(tf.Module):
      @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
      def f(self, x):
        return x
    tf.saved_model.save(M(), str(tmp_path / "m"))
    with pytest.raises(model_io.ModelLoadError, match="without Keras metadata"):
      model_io.load_keras_model(str(tmp_path / "m"))
    with pytest.raises(model_io.ModelLoadError, match="no saved_model.pb"):
      model_io.load_keras_model(str(tmp_path / "nothing"))

  def test_staged_output_leaves_nothing_on_failure(self, tmp_path):
    final = str(tmp_path / "out" / "Format-Serving")
    with pytest.raises(RuntimeError):
      with model_io.staged_output(final) as stage:
        open(os.path.join(stage, "half"), "w").close()
        raise RuntimeError("boom")
    assert not os.path.exists(final)
    with model_io.staged_output(final) as stage:
      open(os.path.join(stage, "done"), "w").close()
    assert os.listdir(final) == ["done"]


class TestImpossibleThresholds:

  @pytest.mark.parametrize("value", [1.0, 5.0, 1e308])
  def test_max_drop_of_the_whole_range_is_refused(self, value):
    with pytest.raises(ValueError, match=r"`max_drop`=.* is at least 1, the "
                       r"whole range of accuracy.*rejects nothing"):
      thresholds.GateThresholds(max_drop=value)

  def test_unbounded_metric_keeps_large_drops(self):
    t = thresholds.GateThresholds(metric="crossentropy", max_drop=5.0)
    assert t.max_drop == 5.0

  def test_below_the_range_still_allowed(self):
    assert thresholds.GateThresholds(max_drop=0.99).max_drop == 0.99


def _example(x=None, label=None, label_float=False):
  feats = {}
  if x is not None:
    feats["x"] = tf.train.Feature(float_list=tf.train.FloatList(value=[x]))
  if label is not None:
    feats["label"] = (
        tf.train.Feature(float_list=tf.train.FloatList(value=[label]))
        if label_float else
        tf.train.Feature(int64_list=tf.train.Int64List(value=[label])))
  return tf.train.Example(
      features=tf.train.Features(feature=feats)).SerializeToString()


def _schema(label_spec, x_dtype=tf.float32):
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  return schema_utils.schema_from_feature_spec(
      {"x": tf.io.FixedLenFeature([1], x_dtype), "label": label_spec})


X_SPEC = {"x": tf.TensorSpec([None, 1], tf.float32, name="x")}


class TestMissingLabels:
  """A VarLen label (a CSV with empty cells) never becomes class 0."""

  def test_missing_int_label_is_not_class_zero(self):
    dec = features.ExampleDecoder(_schema(tf.io.VarLenFeature(tf.int64)),
                                  "label", X_SPEC)
    _, label, present = dec.decode_with_presence(tf.constant(
        [_example(1.0, 2), _example(2.0), _example(3.0, 0)]))
    assert label.numpy().tolist() == [2, -1, 0]
    assert present.numpy().tolist() == [True, False, True]
    # A batch where every label is missing keeps one value per example.
    _, label, present = dec.decode_with_presence(tf.constant([_example(2.0)]))
    assert label.numpy().tolist() == [-1] and not present.numpy()[0]

  def test_missing_float_label_is_nan(self):
    dec = features.ExampleDecoder(_schema(tf.io.VarLenFeature(tf.float32)),
                                  "label", X_SPEC)
    _, label = dec.decode(tf.constant([_example(1.0), _example(1.0, 1.0, True)]))
    assert np.isnan(label.numpy()[0]) and label.numpy()[1] == 1.0

  def test_require_labels_counts_and_refuses(self, tmp_path):
    path = str(tmp_path / "data.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
      for i in range(6):
        w.write(_example(float(i), i % 2 if i % 3 else None))
    dec = features.ExampleDecoder(_schema(tf.io.VarLenFeature(tf.int64)),
                                  "label", X_SPEC)
    with pytest.raises(features.DataError,
                       match=r"2 of 6 examples of the 'train' split have no "
                       r"value for `label_key`='label'"):
      dec.require_labels([path], "train")
    assert dec.require_labels(None, "eval") == 0

  def test_require_labels_passes_complete_data(self, tmp_path):
    path = str(tmp_path / "data.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as w:
      for i in range(5):
        w.write(_example(float(i), i % 2))
    dec = features.ExampleDecoder(_schema(tf.io.VarLenFeature(tf.int64)),
                                  "label", X_SPEC)
    assert dec.require_labels([path], "train") == 5


class TestDataThatDoesNotFit:

  def test_label_that_is_a_model_input(self):
    specs = dict(X_SPEC, label=tf.TensorSpec([None, 1], tf.float32, name="label"))
    with pytest.raises(features.DataError,
                       match=r"`label_key`='label' is one of the model's inputs"):
      features.ExampleDecoder(
          _schema(tf.io.FixedLenFeature([1], tf.int64)), "label", specs)

  def test_string_feature_for_a_numeric_input(self):
    with pytest.raises(features.DataError,
                       match=r"input 'x' is float32 but the feature 'x' is "
                       r"string"):
      features.ExampleDecoder(
          _schema(tf.io.FixedLenFeature([1], tf.int64), x_dtype=tf.string),
          "label", X_SPEC)

  def test_examples_of_another_type_than_the_schema(self):
    dec = features.ExampleDecoder(
        _schema(tf.io.FixedLenFeature([1], tf.int64), x_dtype=tf.int64),
        "label", X_SPEC)
    with pytest.raises(features.DataError,
                       match=r"The feature 'x' holds float values in the "
                       r"Examples but the schema says int64"):
      dec.decode_with_presence(tf.constant([_example(1.5, 1)]))


class TestUserModule:
  """common.user_module: the one module_file loader of the three components."""

  def test_reads_the_names_asked_for(self, tmp_path):
    from tfx_compression.components.common import user_module  # pylint: disable=g-import-not-at-top
    path = str(tmp_path / "objects.py")
    with open(path, "w") as f:
      f.write("def custom_objects():\n  return {'swish2': abs}\n")
    found = user_module.load(path, ("input_fn", "custom_objects"))
    assert found["input_fn"] is None
    assert user_module.custom_objects(found["custom_objects"], path) == {
        "swish2": abs}

  def test_missing_file_names_the_parameter(self):
    from tfx_compression.components.common import user_module  # pylint: disable=g-import-not-at-top
    with pytest.raises(ValueError, match=r"`module_file`='/no/such/m.py' could "
                       "not be imported: there is no such file. Give the path"):
      user_module.load("/no/such/m.py", ("custom_objects",))

  def test_custom_objects_must_be_a_dict(self, tmp_path):
    from tfx_compression.components.common import user_module  # pylint: disable=g-import-not-at-top
    path = str(tmp_path / "objects.py")
    with open(path, "w") as f:
      f.write("custom_objects = [1]\n")
    objects = user_module.load(path, ("custom_objects",))["custom_objects"]
    with pytest.raises(TypeError, match=r"must be a dict .*got list"):
      user_module.custom_objects(objects, path)
