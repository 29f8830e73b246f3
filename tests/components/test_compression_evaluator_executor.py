"""The CompressionEvaluator's Executor().Do on the digits fixtures."""

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from tfx_compression.components.common import features
from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.components.compression_evaluator import executor
from tfx_compression.pipelines.trainers import digits_trainer
from tests import fixtures


def _run(tmp_path, baseline, candidate, examples, schema, name="out",
         beam_args=None, baseline_blessing=None, **params):
  """Runs the executor; returns (blessing, evaluation, report dict)."""
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = os.path.join(tmp_path, name, "blessing")
  evaluation_art = standard_artifacts.ModelEvaluation()
  evaluation_art.uri = os.path.join(tmp_path, name, "evaluation")
  os.makedirs(blessing.uri)  # the orchestrator creates output directories
  inputs = {"baseline_model": [baseline], "candidate_model": [candidate],
            "examples": [examples], "schema": [schema]}
  if baseline_blessing is not None:
    inputs["baseline_blessing"] = [baseline_blessing]
  exec_properties = {"label_key": "label", "max_drop": 0.01,
                     "latency_samples": 0}
  exec_properties.update(params)
  context = None
  if beam_args:
    # TFX's hook for the pipeline factory: the executor must build its
    # pipeline through _make_beam_pipeline() for these options to apply.
    context = base_beam_executor.BaseBeamExecutor.Context(
        make_beam_pipeline_fn=lambda: beam.Pipeline(argv=beam_args))
  executor.Executor(context).Do(
      inputs, {"blessing": [blessing], "evaluation": [evaluation_art]},
      exec_properties)
  with open(os.path.join(evaluation_art.uri, "report.json")) as f:
    report = json.load(f)
  return blessing, evaluation_art, report


def _eval_accuracy(model) -> float:
  """The model's accuracy on the eval split, computed directly with Keras."""
  x, y = fixtures.digits_arrays()
  start = 2 * len(y) // 3
  feats = {k: x[start:, i:i + 1].astype(np.float32)
           for i, k in enumerate(fixtures.FEATURES)}
  return float(np.mean(np.argmax(model.predict(feats, verbose=0), 1) == y[start:]))


def _push(tmp_path, model, blessing) -> int:
  """Runs the stock Pusher; returns its `pushed` property."""
  pushed = standard_artifacts.PushedModel()
  pushed.uri = os.path.join(tmp_path, "pushed")
  destination = pusher_pb2.PushDestination(
      filesystem=pusher_pb2.PushDestination.Filesystem(
          base_directory=os.path.join(tmp_path, "serving")))
  pusher_executor.Executor().Do(
      {"model": [model], "model_blessing": [blessing]},
      {"pushed_model": [pushed]},
      {"push_destination": proto_utils.proto_to_json(destination)})
  return pushed.get_int_custom_property("pushed")


@pytest.fixture(scope="module")
def perturbed_model_artifact(trained_model, tmp_path_factory):
  """A noisy copy of the trained model, saved as the Trainer saves."""
  model = keras.models.clone_model(trained_model)
  rng = np.random.default_rng(0)
  model.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype)
                     for w in trained_model.get_weights()])
  return fixtures.save_trainer_model(
      model, str(tmp_path_factory.mktemp("perturbed")), "perturbed"), model


@pytest.fixture(scope="module")
def tflite_artifact(model_artifact, tmp_path_factory):
  """The fixture model as a full-integer TFLite model, as the Quantizer writes it."""
  from tfx_compression.components.common import model_io  # pylint: disable=g-import-not-at-top
  model = model_io.load_keras_model(
      os.path.join(model_artifact.uri, "Format-Serving"))
  specs = {k: tf.TensorSpec([1, 1], tf.float32, name=k)
           for k in digits_trainer.FEATURE_KEYS}
  fn = tf.function(lambda x: {"probabilities": model(x, training=False)},
                   input_signature=[specs], autograph=False)
  x, _ = fixtures.digits_arrays()
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [fn.get_concrete_function()], model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: (
      {k: x[i:i + 1, j:j + 1].astype(np.float32)
       for j, k in enumerate(digits_trainer.FEATURE_KEYS)} for i in range(100))
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = converter.inference_output_type = tf.int8
  content = converter.convert()
  art = standard_artifacts.Model()
  art.uri = str(tmp_path_factory.mktemp("quantized"))
  serving = os.path.join(art.uri, "Format-Serving")
  os.makedirs(serving)
  with open(os.path.join(serving, "model.tflite"), "wb") as f:
    f.write(content)
  interpreter = tf.lite.Interpreter(model_content=content)

  def describe(d):
    return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name,
            "shape": [int(s) for s in d["shape"]],
            "quantization": [float(d["quantization"][0]),
                             int(d["quantization"][1])]}
  runner = interpreter.get_signature_runner()
  io = {"inputs": [dict(describe(d), name=n)
                   for n, d in runner.get_input_details().items()],
        "outputs": [dict(describe(d), name=n)
                    for n, d in runner.get_output_details().items()],
        "preprocessing": "none"}
  with open(os.path.join(serving, "tflite_io.json"), "w") as f:
    json.dump(io, f)
  art.set_float_custom_property("sparsity", 0.0)
  return art


class TestBlessing:

  def test_same_model_is_blessed_and_pushed(self, tmp_path, model_artifact,
                                            trained_model, examples_artifact,
                                            schema_artifact):
    blessing, evaluation_art, report = _run(
        tmp_path, model_artifact, model_artifact, examples_artifact,
        schema_artifact, latency_samples=20, min_compression_ratio=0.99)
    assert os.listdir(blessing.uri) == ["BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 1
    assert blessing.get_string_custom_property("candidate_model") == model_artifact.uri
    # Invisible to LatestBlessedModelStrategy (it resolves current_model_id).
    assert not blessing.has_custom_property("current_model_id")
    assert report["blessed"] and report["verdict"].startswith("BLESSED")
    # The whole eval split, and the accuracy Keras itself computes on it.
    assert report["examples"]["count"] == 599
    expected = _eval_accuracy(trained_model)
    assert report["metrics"]["baseline"]["accuracy"] == pytest.approx(expected)
    assert report["metrics"]["candidate"] == report["metrics"]["baseline"]
    # Sizes of both SavedModels; latency measured for both, one thread.
    assert report["sizes"]["size_ratio"] == pytest.approx(1.0)
    assert report["latency"]["threads"] == 1
    assert report["latency"]["samples"] == 20
    assert 0 < report["latency"]["baseline_seconds"] < 1
    for art in (blessing, evaluation_art):
      assert art.get_float_custom_property("baseline_accuracy") == (
          pytest.approx(expected))
      assert art.get_float_custom_property("metric_drop") == 0.0
      assert art.get_int_custom_property("blessed") == 1
      for name in ("candidate_accuracy", "size_ratio", "gzip_size_ratio",
                   "latency_ratio", "sparsity"):
        assert art.has_custom_property(name), name
    assert sorted(os.listdir(evaluation_art.uri)) == [
        "report.html", "report.json", "report.md"]
    assert _push(tmp_path, model_artifact, blessing) == 1

  def test_unreachable_threshold_is_not_blessed_nor_pushed(
      self, tmp_path, model_artifact, examples_artifact, schema_artifact):
    blessing, evaluation_art, report = _run(
        tmp_path, model_artifact, model_artifact, examples_artifact,
        schema_artifact, min_value=1.01)
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert blessing.get_int_custom_property("blessed") == 0
    assert evaluation_art.get_int_custom_property("blessed") == 0
    reason = blessing.get_string_custom_property("reason")
    assert reason.startswith("NOT BLESSED") and "min_value FAILED" in reason
    assert [(c["name"], c["passed"]) for c in report["checks"]] == [
        ("max_drop", True), ("min_value", False)]
    with open(os.path.join(evaluation_art.uri, "report.md")) as f:
      assert "| min_value |" in f.read()
    assert _push(tmp_path, model_artifact, blessing) == 0
    assert not os.path.exists(os.path.join(tmp_path, "serving"))

  def test_perturbed_candidate(self, tmp_path, model_artifact, trained_model,
                               perturbed_model_artifact, examples_artifact,
                               schema_artifact):
    candidate, model = perturbed_model_artifact
    _, _, report = _run(tmp_path, model_artifact, candidate, examples_artifact,
                        schema_artifact, max_drop=0.5, batch_size=100)
    cand = _eval_accuracy(model)
    assert report["metrics"]["candidate"]["accuracy"] == pytest.approx(cand)
    assert report["metric_drop"] == pytest.approx(
        _eval_accuracy(trained_model) - cand)

  def test_unblessed_baseline_blocks_the_candidate(
      self, tmp_path, model_artifact, examples_artifact, schema_artifact):
    upstream = standard_artifacts.ModelBlessing()
    upstream.uri = os.path.join(tmp_path, "upstream")
    upstream.set_int_custom_property("blessed", 0)
    upstream.set_string_custom_property("current_model", model_artifact.uri)
    blessing, _, report = _run(tmp_path, model_artifact, model_artifact,
                               examples_artifact, schema_artifact,
                               baseline_blessing=upstream)
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert report["reasons"] == ["the baseline model was not blessed"]
    assert all(c["passed"] for c in report["checks"])

  def test_nan_predictions_are_not_blessed(self, tmp_path, trained_model,
                                           model_artifact, examples_artifact,
                                           schema_artifact):
    model = keras.models.clone_model(trained_model)
    weights = trained_model.get_weights()
    weights[-1] = np.full_like(weights[-1], np.nan)  # the output bias
    model.set_weights(weights)
    candidate = fixtures.save_trainer_model(model, str(tmp_path), "nan")
    blessing, _, report = _run(tmp_path, model_artifact, candidate,
                               examples_artifact, schema_artifact)
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert "599 of 599 candidate predictions were NaN or infinite" in (
        report["verdict"])


class TestTFLiteCandidate:

  def test_int8_candidate(self, tmp_path, model_artifact, tflite_artifact,
                          examples_artifact, schema_artifact):
    blessing, _, report = _run(
        tmp_path, model_artifact, tflite_artifact, examples_artifact,
        schema_artifact, max_drop=0.02, min_compression_ratio=3.0,
        latency_samples=30)
    base, cand = report["metrics"]["baseline"], report["metrics"]["candidate"]
    assert abs(base["accuracy"] - cand["accuracy"]) < 0.02
    assert cand["accuracy"] != base["accuracy"] or cand["auc"] != base["auc"]
    sizes = report["sizes"]
    assert sizes["representation"].startswith("TFLite")
    # int8 weights against the float TFLite conversion of the baseline.
    assert 3.0 < sizes["size_ratio"] < 4.5
    assert sizes["baseline_saved_model_bytes"] > sizes["baseline_bytes"]
    assert report["latency"]["samples"] == 30
    assert report["latency"]["latency_ratio"] > 0
    assert report["models"]["candidate"]["preprocessing"] == "none"
    assert report["sparsity"]["source"].startswith("recorded")
    assert report["examples"]["candidate_outputs"] == "probabilities"
    assert os.listdir(blessing.uri) == ["BLESSED"]


class TestBadInput:

  def test_empty_eval_split(self, tmp_path, model_artifact, schema_artifact):
    examples = fixtures.write_examples(
        str(tmp_path), splits={"train": slice(0, 10), "eval": slice(0, 0)})
    with pytest.raises(features.DataError, match="no blessing on zero examples"):
      _run(tmp_path, model_artifact, model_artifact, examples, schema_artifact)
    assert not os.listdir(os.path.join(tmp_path, "out", "blessing"))

  def test_label_not_in_schema(self, tmp_path, model_artifact,
                               examples_artifact, schema_artifact):
    with pytest.raises(features.DataError, match="`label_key`='digit'"):
      _run(tmp_path, model_artifact, model_artifact, examples_artifact,
           schema_artifact, label_key="digit")
    assert not os.listdir(os.path.join(tmp_path, "out", "blessing"))

  def test_candidate_inputs_do_not_match(self, tmp_path, model_artifact,
                                         examples_artifact, schema_artifact):
    inputs = {k: keras.Input(shape=(1,), name=k) for k in ("width", "height")}
    out = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Concatenate()(list(inputs.values())))
    model = keras.Model(inputs, out)
    candidate = standard_artifacts.Model()
    candidate.uri = os.path.join(tmp_path, "other")
    model.save(os.path.join(candidate.uri, "Format-Serving"), save_format="tf")
    with pytest.raises(evaluation.EvaluationError,
                       match=r"inputs \['height', 'width'\] are not inputs"):
      _run(tmp_path, model_artifact, candidate, examples_artifact,
           schema_artifact)
    assert not os.listdir(os.path.join(tmp_path, "out", "blessing"))

  def test_unknown_metric(self, tmp_path, model_artifact, examples_artifact,
                          schema_artifact):
    with pytest.raises(ValueError, match="'mape' is not a metric.*accuracy"):
      _run(tmp_path, model_artifact, model_artifact, examples_artifact,
           schema_artifact, metric="mape")


def test_multi_process_runner_gives_the_same_numbers(
    tmp_path, model_artifact, perturbed_model_artifact, schema_artifact):
  examples = fixtures.write_examples(str(tmp_path), limit=150)
  candidate, _ = perturbed_model_artifact
  reports = {}
  for mode in ("in_memory", "multi_processing"):
    _, _, reports[mode] = _run(
        tmp_path, model_artifact, candidate, examples, schema_artifact,
        name=mode, max_drop=0.5, batch_size=8,
        beam_args=[f"--direct_running_mode={mode}", "--direct_num_workers=2"])
  assert reports["in_memory"]["examples"]["count"] == 50
  assert reports["multi_processing"]["metrics"] == reports["in_memory"]["metrics"]


class TestComponent:
  """The component checks its parameters when the pipeline is defined."""

  def _channels(self):
    from tfx.types import channel_utils  # pylint: disable=g-import-not-at-top
    def ch(t):
      return channel_utils.as_channel([t()])
    return dict(baseline_model=ch(standard_artifacts.Model),
                candidate_model=ch(standard_artifacts.Model),
                examples=ch(standard_artifacts.Examples),
                schema=ch(standard_artifacts.Schema))

  def test_wires_outputs_and_parameters(self):
    from tfx_compression import CompressionEvaluator  # pylint: disable=g-import-not-at-top
    c = CompressionEvaluator(label_key="label", max_drop=0.01, min_value=1,
                             **self._channels())
    assert set(c.outputs) == {"blessing", "evaluation"}
    assert c.outputs["blessing"].type == standard_artifacts.ModelBlessing
    assert c.exec_properties["min_value"] == 1.0
    assert c.exec_properties["metric"] == "accuracy"

  @pytest.mark.parametrize("params,error,match", [
      ({"max_drop": -0.1}, ValueError, "max_drop"),
      ({}, ValueError, "max_drop"),
      ({"max_drop": 0.01, "metric": "mape"}, ValueError, "Use one of"),
      ({"max_drop": 0.01, "metric": "loss", "min_value": 0.1}, ValueError,
       "contradicts"),
      ({"max_drop": "0.01"}, TypeError, "max_drop"),
  ])
  def test_bad_parameters_fail_at_definition(self, params, error, match):
    from tfx_compression import CompressionEvaluator  # pylint: disable=g-import-not-at-top
    with pytest.raises(error, match=match):
      CompressionEvaluator(label_key="label", **params, **self._channels())

  def test_runtime_parameter_is_checked_at_run_time(self):
    from tfx.orchestration import data_types  # pylint: disable=g-import-not-at-top
    from tfx_compression import CompressionEvaluator  # pylint: disable=g-import-not-at-top
    drop = data_types.RuntimeParameter(name="max_drop", ptype=float, default=0.01)
    c = CompressionEvaluator(label_key="label", max_drop=drop, **self._channels())
    assert c.exec_properties["max_drop"] is drop
