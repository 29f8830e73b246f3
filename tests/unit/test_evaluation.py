"""Tests for the CompressionEvaluator's pure core: metrics, decision, TFLite I/O."""

import json
import math
import os

import numpy as np
import pytest
from scipy import special
from sklearn import metrics as skm
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import thresholds
from tfx_compression.components.compression_evaluator import config as config_lib
from tfx_compression.components.compression_evaluator import evaluation as ev
from tfx_compression.components.compression_evaluator import latency as latency_lib
from tfx_compression.components.compression_evaluator import predictors
from tests import fixtures

SEED = 7


def _stats_in_batches(outputs, labels, top_k=5, sizes=(37, 100, 1)):
  """Stats computed batch by batch (uneven sizes) and merged, the output kind
  detected once as the evaluator does."""
  kind = metrics_lib.detect_output_kind(outputs[:64])
  total, start, i = None, 0, 0
  while start < len(labels):
    end = start + sizes[i % len(sizes)]
    s = metrics_lib.batch_stats(outputs[start:end], labels[start:end], top_k, kind)
    total = s if total is None else total.merge(s)
    start, i = end, i + 1
  return total


def _random_probs(rng, n, c):
  return rng.dirichlet(np.ones(c) * 0.7, size=n)


class TestMetricsMatchSklearn:

  @pytest.mark.parametrize("kind", ["probabilities", "logits"])
  def test_multiclass(self, kind):
    rng = np.random.default_rng(SEED)
    n, c = 600, 6
    labels = rng.integers(0, c, n)
    if kind == "logits":
      outputs = rng.normal(0, 2.5, (n, c))
      probs = special.softmax(outputs, axis=1)
    else:
      outputs = probs = _random_probs(rng, n, c)
    stats = _stats_in_batches(outputs, labels, top_k=3)
    m = metrics_lib.metrics_from_stats(stats)
    pred = probs.argmax(1)
    assert m["count"] == n
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
    for name, fn in (("precision", skm.precision_score),
                     ("recall", skm.recall_score), ("f1", skm.f1_score)):
      assert m[name] == pytest.approx(
          fn(labels, pred, average="macro", zero_division=0), abs=1e-12), name
    assert m["top_k_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(labels, probs, k=3, labels=range(c)), abs=1e-12)
    assert m["crossentropy"] == pytest.approx(
        skm.log_loss(labels, probs, labels=range(c)), abs=1e-6)
    assert m["auc"] == pytest.approx(
        skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"),
        abs=2e-3)
    assert stats.logit_rows == (n if kind == "logits" else 0)

  @pytest.mark.parametrize("kind", ["sigmoid", "logit", "two_units"])
  def test_binary(self, kind):
    rng = np.random.default_rng(SEED + 1)
    n = 500
    labels = rng.integers(0, 2, n)
    # Scores that carry signal, so precision and recall are not trivial.
    p1 = special.expit(rng.normal(0, 1.5, n) + 1.2 * (labels - 0.5))
    outputs = {"sigmoid": p1[:, None], "logit": special.logit(p1),
               "two_units": np.stack([1 - p1, p1], 1)}[kind]
    m = metrics_lib.metrics_from_stats(_stats_in_batches(outputs, labels))
    pred = (p1 > 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, p1), abs=2e-3)
    assert m["crossentropy"] == pytest.approx(skm.log_loss(labels, p1), abs=1e-6)

  def test_auc_is_exact_when_scores_fall_in_distinct_bins(self):
    rng = np.random.default_rng(SEED + 2)
    scores = (rng.permutation(metrics_lib.AUC_BINS)[:300] + 0.5) / metrics_lib.AUC_BINS
    labels = rng.integers(0, 2, 300)
    m = metrics_lib.metrics_from_stats(metrics_lib.batch_stats(scores, labels))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)


class TestStatistics:

  def test_merge_is_independent_of_batching_and_order(self):
    rng = np.random.default_rng(SEED)
    probs, labels = _random_probs(rng, 300, 4), rng.integers(0, 4, 300)
    whole = metrics_lib.batch_stats(probs, labels)
    parts = [metrics_lib.batch_stats(probs[i:i + 64], labels[i:i + 64])
             for i in range(0, 300, 64)]
    merged = parts[-1]
    for p in reversed(parts[:-1]):
      merged = p.merge(merged)
    assert json.dumps(merged.to_dict()) == json.dumps(whole.to_dict())

  def test_to_dict_round_trip(self):
    rng = np.random.default_rng(SEED)
    s = metrics_lib.batch_stats(_random_probs(rng, 50, 3), rng.integers(0, 3, 50))
    back = metrics_lib.MetricStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back.to_dict() == s.to_dict()
    assert metrics_lib.metrics_from_stats(back) == metrics_lib.metrics_from_stats(s)

  def test_nan_and_inf_rows_are_counted_apart(self):
    probs = np.array([[0.9, 0.1], [np.nan, 0.5], [0.2, np.inf], [0.3, 0.7]])
    s = metrics_lib.batch_stats(probs, np.array([0, 0, 1, 1]))
    assert (s.count, s.nonfinite, s.examples) == (2, 2, 4)
    assert metrics_lib.metrics_from_stats(s)["accuracy"] == 1.0

  def test_bad_labels_are_counted(self):
    s = metrics_lib.batch_stats(np.eye(3), np.array([0, 7, 1.5]))
    assert (s.count, s.bad_labels) == (1, 2)

  def test_string_labels_are_an_error(self):
    with pytest.raises(ev.EvaluationError, match="strings"):
      metrics_lib.batch_stats(np.eye(2), np.array([b"cat", b"dog"]))

  @pytest.mark.parametrize("outputs,kind", [
      ([[0.2, 0.8], [1.0, 0.0]], "probabilities"),
      ([[0.2, 0.7]], "logits"),            # does not sum to 1
      ([[2.0, -1.0], [0.5, 0.5]], "logits"),
      ([[0.3], [0.9]], "probabilities"),   # one sigmoid unit
      ([[0.3], [1.7]], "logits"),          # one unit, a logit outside [0, 1]
      ([[np.nan, np.nan], [0.4, 0.6]], "probabilities"),  # NaN rows ignored
  ])
  def test_output_kind(self, outputs, kind):
    assert metrics_lib.detect_output_kind(np.array(outputs)) == kind

  def test_quantized_probabilities_are_not_taken_for_logits(self):
    rng = np.random.default_rng(SEED)
    probs = _random_probs(rng, 200, 10)
    quantized = np.round(probs * 256) / 256  # an int8 softmax's resolution
    _, logits = metrics_lib.to_probabilities(quantized)
    assert not logits.any()
    assert metrics_lib.detect_output_kind(quantized) == metrics_lib.PROBABILITIES

  def test_no_example_gives_nan(self):
    m = metrics_lib.metrics_from_stats(metrics_lib.MetricStats(num_classes=3, top_k=5))
    assert m["count"] == 0 and math.isnan(m["accuracy"])

  def test_memory_does_not_grow_with_examples(self):
    rng = np.random.default_rng(SEED)
    small = metrics_lib.batch_stats(_random_probs(rng, 10, 4), rng.integers(0, 4, 10))
    big = metrics_lib.batch_stats(_random_probs(rng, 5000, 4), rng.integers(0, 4, 5000))
    assert len(json.dumps(big.merge(small).to_dict())) < 1.1 * len(
        json.dumps(small.to_dict())) + 20000

  def test_class_count_mismatch_is_an_error(self):
    with pytest.raises(ev.EvaluationError, match="classes"):
      metrics_lib.batch_stats(np.eye(3), [0, 1, 2]).merge(metrics_lib.batch_stats(np.eye(2), [0, 1]))


class TestDecide:

  def _metrics(self, acc):
    return {name: acc for name in thresholds.METRICS}

  def test_blessed_when_every_threshold_holds(self):
    gate = thresholds.GateThresholds(max_drop=0.02, min_compression_ratio=2.0)
    d = ev.decide(gate, self._metrics(0.95), self._metrics(0.94), 3.9, 0.5)
    assert d.blessed and d.verdict.startswith("BLESSED")
    assert [c.name for c in d.checks] == ["max_drop", "min_compression_ratio"]

  def test_each_failure_is_named(self):
    gate = thresholds.GateThresholds(max_drop=0.01, min_value=0.9,
                                     min_compression_ratio=4.0,
                                     max_latency_ratio=1.0)
    d = ev.decide(gate, self._metrics(0.95), self._metrics(0.92), 3.0, 1.5)
    assert not d.blessed
    failed = [c.name for c in d.checks if not c.passed]
    assert failed == ["max_drop", "min_compression_ratio", "max_latency_ratio"]
    for name in failed:
      assert name in d.verdict

  def test_unblessed_baseline(self):
    gate = thresholds.GateThresholds(max_drop=0.5)
    d = ev.decide(gate, self._metrics(0.9), self._metrics(0.9),
                  baseline_blessed=False)
    assert not d.blessed and ev.BASELINE_NOT_BLESSED in d.verdict
    assert all(c.passed for c in d.checks)
    assert ev.decide(gate, self._metrics(0.9), self._metrics(0.9),
                     baseline_blessed=True).blessed

  def test_nan_predictions_are_not_blessed(self):
    gate = thresholds.GateThresholds(max_drop=0.5)
    d = ev.decide(gate, self._metrics(0.9), self._metrics(0.9),
                  candidate_nonfinite=3, examples=100)
    assert not d.blessed
    assert "3 of 100 candidate predictions were NaN or infinite" in d.verdict


class TestConfig:

  def test_builds_the_gate(self):
    c = config_lib.EvaluatorConfig.from_parameters(
        {"label_key": "label", "metric": "sparse_categorical_accuracy",
         "max_drop": 0.01, "compression_measure": "GZIP", "batch_size": None})
    assert c.metric == "accuracy" and c.thresholds.max_drop == 0.01
    assert c.compression_measure == "gzip" and c.batch_size == 256

  @pytest.mark.parametrize("params,error,match", [
      ({"max_drop": 0.01}, ValueError, "label_key"),
      ({"label_key": "label"}, ValueError, "max_drop"),
      ({"label_key": "label", "max_drop": 0.01, "metric": "acc"}, ValueError,
       "accuracy, auc"),
      ({"label_key": "label", "metric": "crossentropy", "min_value": 0.2},
       ValueError, "contradicts"),
      ({"label_key": "label", "max_drop": 0.01, "batch_size": 0}, ValueError,
       "batch_size"),
      ({"label_key": "label", "max_drop": 0.01, "batch_size": 2.5}, TypeError,
       "batch_size"),
      ({"label_key": "label", "max_drop": 0.01, "compression_measure": "zip"},
       ValueError, "compression_measure"),
      ({"label_key": "label", "max_drop": 0.01, "max_latency_ratio": 1.0,
        "latency_samples": 0}, ValueError, "latency_samples"),
  ])
  def test_bad_values(self, params, error, match):
    with pytest.raises(error, match=match):
      config_lib.EvaluatorConfig.from_parameters(params)


def _tiny_model(names=("a", "b"), classes=3, seed=0):
  return fixtures.tiny_features_model(names, classes, seed, output_name="out")


class TestModels:

  def test_float_tflite_matches_keras(self):
    model = _tiny_model()
    tfl = predictors.TFLitePredictor(model_content=predictors.keras_to_float_tflite(model))
    assert tfl.input_names == ["a", "b"] and tfl.num_outputs == 3
    feats = {n: np.random.default_rng(1).normal(size=(5, 1)).astype(np.float32)
             for n in ("a", "b")}
    want = predictors.KerasPredictor(model).predict(feats)
    np.testing.assert_allclose(tfl.predict(feats), want, atol=1e-5)

  def test_int8_model_is_fed_quantized_and_read_dequantized(self):
    model = _tiny_model()
    rng = np.random.default_rng(2)
    specs = {n: tf.TensorSpec([1, 1], tf.float32, name=n) for n in ("a", "b")}
    fn = tf.function(lambda x: {"out": model(x)}, input_signature=[specs])
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        {n: rng.normal(size=(1, 1)).astype(np.float32) for n in ("a", "b")}
        for _ in range(50))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    tfl = predictors.TFLitePredictor(model_content=conv.convert())
    assert np.dtype(tfl.inputs["a"]["dtype"]) == np.int8
    feats = {n: rng.normal(size=(20, 1)).astype(np.float32) for n in ("a", "b")}
    got = tfl.predict(feats)
    np.testing.assert_allclose(got, predictors.KerasPredictor(model).predict(feats),
                               atol=0.05)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=0.03)

  def test_quantize_round_trip(self):
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.array([[-1.0, 0.0, 0.52, 100.0]])
    # pylint: disable=protected-access
    q = predictors._quantize(x, detail)
    assert q.dtype == np.int8 and q[0, -1] == 127  # clipped, not wrapped
    np.testing.assert_allclose(predictors._dequantize(q, detail)[0, :3],
                               [-1.0, 0.0, 0.5])

  def test_tflite_sparsity(self):
    model = _tiny_model()
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :4] = 0.0  # half of the hidden kernel
    model.get_layer("hidden").set_weights([kernel, bias])
    sparsity = predictors.tflite_sparsity(predictors.keras_to_float_tflite(model))
    # 8 of 16 + 0 of 24 kernel weights are zero.
    assert sparsity == pytest.approx(8 / 40)

  def test_tflite_latency_is_measured_for_each_model(self):
    model = _tiny_model()
    content = predictors.keras_to_float_tflite(model)
    preds = {"baseline": predictors.TFLitePredictor(model_content=content),
             "candidate": predictors.TFLitePredictor(model_content=content)}
    feats = {n: np.ones((5, 1), np.float32) for n in ("a", "b")}
    lat = latency_lib.tflite_latency(preds, feats, warmup=2)
    assert set(lat) == {"baseline", "candidate"}
    assert all(0 < v < 1 for v in lat.values())

  def test_tflite_latency_takes_turns_in_blocks_and_skips_the_warmup(self):
    calls = []

    class Fake:
      def __init__(self, role):
        self.role = role

      def set_inputs(self, row):
        calls.append((self.role, int(row["a"][0, 0])))

      def invoke(self):
        pass

    feats = {"a": np.arange(7, dtype=np.float32).reshape(7, 1)}
    lat = latency_lib.tflite_latency({"baseline": Fake("b"), "candidate": Fake("c")},
                            feats, warmup=2, block=4)
    assert set(lat) == {"baseline", "candidate"}
    # Each model runs 4 examples in a row, then the other: 9 calls each.
    assert [r for r, _ in calls] == (["b"] * 4 + ["c"] * 4) * 2 + ["b", "c"]
    assert [i for r, i in calls if r == "c"] == [0, 1, 2, 3, 4, 5, 6, 0, 1]

  def test_candidate_inputs_must_be_the_baselines(self):
    base = predictors.KerasPredictor(_tiny_model(("a", "b")))
    other = predictors.KerasPredictor(_tiny_model(("a", "c")))
    # pylint: disable=protected-access
    with pytest.raises(ev.EvaluationError, match=r"\['c'\].*'a', 'b'"):
      ev._check_inputs(base, other)
    with pytest.raises(ev.EvaluationError, match="4 class"):
      ev._check_inputs(base, predictors.KerasPredictor(_tiny_model(classes=4)))

  def test_custom_objects_module(self, tmp_path):
    path = os.path.join(tmp_path, "objects.py")
    with open(path, "w") as f:
      f.write("def custom_objects():\n  return {'swish2': abs}\n")
    assert predictors.load_custom_objects(path) == {"swish2": abs}
    with open(path, "w") as f:
      f.write("custom_objects = [1]\n")
    with pytest.raises(ev.EvaluationError, match="must be a dict"):
      predictors.load_custom_objects(path)


# ---------------------------------------------------------------------------
# Issue 17: the gate blesses only what it measured.
# ---------------------------------------------------------------------------


class TestTopKTies:
  """Ties count against the model (the true class goes after its ties)."""

  def test_constant_scores_are_never_a_hit(self):
    labels = np.arange(10) % 5
    s = metrics_lib.batch_stats(np.full((10, 5), 0.2), labels, top_k=3)
    assert s.top_k_correct == 0
    assert metrics_lib.metrics_from_stats(s)["top_k_accuracy"] == 0.0

  def test_tie_at_the_boundary_counts_against(self):
    # True class 0 ties with class 1 for 2nd place behind class 2: top-2 miss,
    # whichever order the classes come in; top-3 hit.
    out = np.array([[0.25, 0.25, 0.5]])
    assert metrics_lib.batch_stats(out, [0], top_k=2).top_k_correct == 0
    assert metrics_lib.batch_stats(out[:, [1, 0, 2]], [1], top_k=2).top_k_correct == 0
    assert metrics_lib.batch_stats(out, [0], top_k=3).top_k_correct == 1

  def test_clear_winner_is_a_hit(self):
    out = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    assert metrics_lib.batch_stats(out, [2, 0], top_k=2).top_k_correct == 2
    assert metrics_lib.batch_stats(out, [2, 0], top_k=1).top_k_correct == 1

  def test_top_k_not_below_the_classes_is_refused(self):
    config = config_lib.EvaluatorConfig.from_parameters(
        {"label_key": "label", "metric": "top_k_accuracy", "max_drop": 0.01,
         "top_k": 5})
    with pytest.raises(ev.EvaluationError,
                       match=r"`top_k`=5 is not below the model's 5 classes"):
      ev._check_top_k(config, 5)
    ev._check_top_k(config, 6)  # k < C: fine
    # Another gate metric: top_k only feeds the report, nothing to refuse.
    acc = config_lib.EvaluatorConfig.from_parameters(
        {"label_key": "label", "max_drop": 0.01, "top_k": 5})
    ev._check_top_k(acc, 2)


class TestEvidence:

  def _metrics(self, acc):
    return {name: acc for name in thresholds.METRICS}

  def test_too_few_examples_are_not_blessed(self):
    gate = thresholds.GateThresholds(max_drop=0.01)
    d = ev.decide(gate, self._metrics(0.0), self._metrics(0.0), counted=2,
                  min_examples=100)
    assert not d.blessed
    assert "only 2 example(s) were evaluated" in d.verdict
    assert "`min_examples`=100" in d.verdict
    assert ev.decide(gate, self._metrics(0.9), self._metrics(0.9), counted=100,
                     min_examples=100).blessed

  def test_baseline_at_chance_is_not_blessed(self):
    gate = thresholds.GateThresholds(max_drop=0.01)
    d = ev.decide(gate, self._metrics(0.3), self._metrics(0.3),
                  chance_accuracy=0.3)
    assert not d.blessed and "at chance level" in d.verdict
    assert ev.decide(gate, self._metrics(0.31), self._metrics(0.31),
                     chance_accuracy=0.3).blessed

  def test_chance_accuracy_is_the_majority_class_share(self):
    stats = metrics_lib.batch_stats(np.eye(3)[[0, 0, 0, 1]], [0, 0, 1, 2])
    assert ev.chance_accuracy(stats) == 0.5
    assert ev.chance_accuracy(metrics_lib.MetricStats(num_classes=3, top_k=1)) is None

  def test_blessing_problem_is_a_reason(self):
    gate = thresholds.GateThresholds(max_drop=0.5)
    d = ev.decide(gate, self._metrics(0.9), self._metrics(0.9),
                  baseline_blessed=True,
                  baseline_blessing_problem="`baseline_blessing` is wired but "
                  "resolved to no blessing")
    assert not d.blessed and "resolved to no blessing" in d.verdict

  @pytest.mark.parametrize("params,error,match", [
      ({"min_examples": 0}, ValueError, r"`min_examples`=0 is outside"),
      ({"min_examples": "100"}, TypeError, "`min_examples` must be an integer"),
      ({"output_kind": "scores"}, ValueError, r"`output_kind`='scores'"),
  ])
  def test_config_checks_the_new_parameters(self, params, error, match):
    with pytest.raises(error, match=match):
      config_lib.EvaluatorConfig.from_parameters(
          {"label_key": "label", "max_drop": 0.01, **params})

  def test_config_defaults(self):
    c = config_lib.EvaluatorConfig.from_parameters(
        {"label_key": "label", "max_drop": 0.01, "output_kind": "Logits"})
    assert c.min_examples == config_lib.DEFAULT_MIN_EXAMPLES == 100
    assert c.output_kind == "logits"


class TestMissingLabels:

  def test_rows_without_a_label_are_counted_apart(self):
    s = metrics_lib.batch_stats(np.eye(3), np.array([0, -1, 2]),
                       label_present=[True, False, True])
    assert (s.count, s.missing_labels, s.bad_labels) == (2, 1, 0)
    assert s.examples == 3
    assert metrics_lib.metrics_from_stats(s)["accuracy"] == 1.0
    merged = s.merge(s)
    assert merged.missing_labels == 2
    assert metrics_lib.MetricStats.from_dict(merged.to_dict()).missing_labels == 2


def _one_unit_model(activation=None, loss=None, from_logits=None):
  inp = keras.Input(shape=(1,), name="a")
  out = keras.layers.Dense(1, activation=activation, name="out")(inp)
  model = keras.Model(inp, out)
  if loss == "bce":
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=from_logits))
  elif loss:
    model.compile(loss=loss)
  return model


class TestOutputKind:

  def test_regression_loss_is_refused_naming_output_kind(self):
    model = _one_unit_model(loss="mse")
    with pytest.raises(ev.EvaluationError,
                       match=r"`baseline_model` was trained with the regression "
                       r"loss 'mse'.*`output_kind`="):
      predictors.output_kind_from_model(model, 1)

  def test_regression_loss_recorded_in_a_saved_model(self, tmp_path):
    model = _one_unit_model(loss=keras.losses.MeanSquaredError())
    model.save(str(tmp_path / "m"), save_format="tf")
    from tfx_compression.components.common import model_io  # pylint: disable=g-import-not-at-top
    loaded = model_io.load_keras_model(str(tmp_path / "m"))
    with pytest.raises(ev.EvaluationError, match="regression loss"):
      predictors.output_kind_from_model(loaded, 1)

  def test_linear_unit_without_a_loss_is_refused(self):
    with pytest.raises(ev.EvaluationError,
                       match="one linear output unit and no recorded loss"):
      predictors.output_kind_from_model(_one_unit_model(), 1)

  @pytest.mark.parametrize("kwargs,want", [
      (dict(activation="sigmoid"), "probabilities"),
      (dict(loss="bce", from_logits=True), "logits"),
      (dict(loss="bce", from_logits=False), "probabilities"),
      (dict(loss="binary_crossentropy"), "probabilities"),
  ])
  def test_kind_from_activation_or_loss(self, kwargs, want):
    assert predictors.output_kind_from_model(_one_unit_model(**kwargs), 1) == want

  def test_several_units_without_clues_are_left_to_the_outputs(self):
    inp = keras.Input(shape=(1,), name="a")
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    assert predictors.output_kind_from_model(model, 3) is None
    assert predictors.output_kind_from_model(_tiny_model(), 3) == "probabilities"

  def test_output_kind_parameter_decides(self):
    model = _one_unit_model(loss="mse")
    config = config_lib.EvaluatorConfig.from_parameters(
        {"label_key": "label", "max_drop": 0.01, "output_kind": "probabilities"})
    pred = predictors.KerasPredictor(model, "baseline")
    kinds, source = ev._output_kinds(config, pred, pred, {})
    assert kinds == {"baseline": "probabilities", "candidate": "probabilities"}
    assert "output_kind" in source

  def test_two_outputs_are_refused_naming_the_input(self):
    inp = keras.Input(shape=(1,), name="a")
    model = keras.Model(inp, [keras.layers.Dense(2, name="p")(inp),
                              keras.layers.Dense(1, name="q")(inp)])
    with pytest.raises(ev.EvaluationError,
                       match=r"`candidate_model` has 2 outputs \['p', 'q'\]"):
      predictors.KerasPredictor(model, role="candidate")
