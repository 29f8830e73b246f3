"""The CompressionEvaluator's Executor().Do on the digits fixtures."""

import json
import os
import shutil

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
from tfx_compression.components.common import progress
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
    # A list is what the channel resolved to (maybe nothing); else one artifact.
    inputs["baseline_blessing"] = (baseline_blessing
                                   if isinstance(baseline_blessing, list)
                                   else [baseline_blessing])
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

  def test_evaluation_reports_its_progress(self, tmp_path, model_artifact,
                                           examples_artifact, schema_artifact):
    updates = []
    listener = lambda u: updates.append(u) if u.task == "evaluation" else None
    progress.add_listener(listener)
    try:
      _run(tmp_path, model_artifact, model_artifact, examples_artifact,
           schema_artifact)
    finally:
      progress.remove_listener(listener)
    # Examples done of the eval split's size, counted up to the whole split.
    assert updates, "the evaluation reported no progress"
    assert {u.total for u in updates} == {599}
    assert updates[-1].done == 599 and updates[-1].unit == "examples"
    assert [u.done for u in updates] == sorted(u.done for u in updates)

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


class TestSearchCurveLineage:
  """The Pruner's curve reaches the report behind a Quantizer, never copied."""

  CURVE = {"steps": [
      {"sparsity": s, "metric": m, "metric_name": "accuracy",
       "param_count": 1000, "nonzero_params": int(1000 * (1 - s)),
       "gzip_bytes": int(9000 * (1 - s)), "passed": p}
      for s, m, p in ((0.5, 0.95, True), (0.8, 0.90, False))],
           "chosen_sparsity": 0.5, "baseline_metric": 0.951}

  def test_quantized_search_output_has_the_curve(
      self, tmp_path, model_artifact, examples_artifact, schema_artifact):
    # pylint: disable=g-import-not-at-top
    from tfx_compression.components.common import side_files
    from tfx_compression.components.quantizer import executor as quantizer
    # pylint: enable=g-import-not-at-top
    pruned = standard_artifacts.Model()  # A searched Pruner's output.
    pruned.uri = str(tmp_path / "pruned")
    shutil.copytree(model_artifact.uri, pruned.uri)
    side_files.write_pruning_search(pruned.uri, self.CURVE)
    quantized = standard_artifacts.Model()
    quantized.uri = str(tmp_path / "quantized")
    os.makedirs(quantized.uri)
    quantizer.Executor().Do({quantizer.MODEL_KEY: [pruned]},
                            {quantizer.QUANTIZED_MODEL_KEY: [quantized]},
                            {"quantization": "dynamic"})
    assert side_files.PRUNING_SEARCH not in os.listdir(quantized.uri)

    _, evaluation_art, report = _run(tmp_path, model_artifact, quantized,
                                     examples_artifact, schema_artifact,
                                     max_drop=0.05)
    assert report["pruning_search"] == self.CURVE
    with open(os.path.join(evaluation_art.uri, "report.html")) as f:
      assert "chosen 50%" in f.read()  # the curve drawn


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


@pytest.mark.parametrize("beam_args,staged", [
    (["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
     False),
    (["--runner=DirectRunner"], False),
    (["--runner=apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner"],
     False),
    (["--runner=tfx_compression.components.compression_evaluator.dask_runner."
      "DaskRunner", "--dask_client_address=tcp://h:8786"], False),
    (["--runner=FlinkRunner", "--flink_master=h:8081"], True),
    (["--runner=DataflowRunner", "--project=p"], True),
])
def test_tfx_package_is_staged_only_for_remote_runners(monkeypatch, tmp_path,
                                                       beam_args, staged):
  """TFX builds a source package of itself for remote workers (2 s, 55 MB)."""
  from tfx.utils import dependency_utils  # pylint: disable=g-import-not-at-top
  built = []

  def build():
    built.append(1)
    return str(tmp_path / "tfx_ephemeral.tar.gz")

  monkeypatch.setattr(dependency_utils, "build_ephemeral_package", build)
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=list(beam_args), tmp_dir=str(tmp_path), unique_id="1")
  args = executor.Executor(context)._beam_pipeline_args  # pylint: disable=protected-access
  assert len(built) == int(staged)
  assert (f"--extra_package={tmp_path / 'tfx_ephemeral.tar.gz'}" in args) == staged
  assert args[:len(beam_args)] == beam_args  # the user's args, kept in order
  assert context.beam_pipeline_args == beam_args  # the caller's, untouched


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

  @pytest.mark.parametrize("runtime,params,error,match", [
      ("max_drop", {"batch_size": 0}, ValueError, "batch_size"),
      ("max_drop", {"eval_split": ""}, ValueError, "eval_split"),
      ("max_drop", {"metric": "loss", "min_value": 0.5}, ValueError,
       "contradicts"),
      ("min_compression_ratio", {"max_drop": -0.1}, ValueError, "max_drop"),
      ("min_compression_ratio", {}, ValueError, "at least one of"),
  ])
  def test_runtime_threshold_still_checks_the_rest(self, runtime, params,
                                                   error, match):
    from tfx.orchestration import data_types  # pylint: disable=g-import-not-at-top
    from tfx_compression import CompressionEvaluator  # pylint: disable=g-import-not-at-top
    value = data_types.RuntimeParameter(name=runtime, ptype=float, default=2.0)
    with pytest.raises(error, match=match):
      CompressionEvaluator(label_key="label", **{runtime: value}, **params,
                           **self._channels())

  def test_every_threshold_may_be_a_runtime_parameter(self):
    from tfx.orchestration import data_types  # pylint: disable=g-import-not-at-top
    from tfx_compression import CompressionEvaluator  # pylint: disable=g-import-not-at-top
    thresholds = {name: data_types.RuntimeParameter(name=name, ptype=float,
                                                    default=0.5)
                  for name in ("max_drop", "max_relative_drop", "min_value",
                               "min_compression_ratio", "max_latency_ratio")}
    c = CompressionEvaluator(label_key="label", **thresholds, **self._channels())
    assert all(c.exec_properties[k] is v for k, v in thresholds.items())


def _blessing(tmp_path, name="upstream", blessed=1, **properties):
  art = standard_artifacts.ModelBlessing()
  art.uri = os.path.join(tmp_path, name)
  art.set_int_custom_property("blessed", blessed)
  for key, value in properties.items():
    if isinstance(value, int):
      art.set_int_custom_property(key, value)
    else:
      art.set_string_custom_property(key, value)
  return art


class TestBaselineBlessing:
  """A wired baseline_blessing must be there and be this baseline's."""

  def _model(self, uri, id_=0):
    art = standard_artifacts.Model()
    art.uri = uri
    if id_:
      art.id = id_
    return art

  def test_not_wired_is_no_problem(self, tmp_path):
    assert executor.baseline_blessing_problem(
        False, None, self._model("/m")) is None

  def test_wired_but_empty(self, tmp_path):
    problem = executor.baseline_blessing_problem(True, None, self._model("/m"))
    assert "wired but resolved to no blessing" in problem

  @pytest.mark.parametrize("props,model_id,ok", [
      (dict(current_model_id=7), 7, True),
      (dict(current_model_id=8), 7, False),
      (dict(current_model="/m"), 0, True),
      (dict(current_model="/other"), 0, False),
      (dict(current_model_id=8, current_model="/m"), 7, False),  # ids decide
      (dict(candidate_model_id=7), 7, True),  # a CompressionEvaluator's blessing
      ({}, 7, False),
  ])
  def test_blessed_model_must_be_the_baseline(self, tmp_path, props, model_id,
                                              ok):
    problem = executor.baseline_blessing_problem(
        True, _blessing(tmp_path, **props), self._model("/m", model_id))
    assert (problem is None) == ok, problem
    if not ok:
      assert "`baseline_blessing`" in problem

  def test_empty_channel_gives_not_blessed(self, tmp_path, model_artifact,
                                           examples_artifact, schema_artifact):
    blessing, _, report = _run(tmp_path, model_artifact, model_artifact,
                               examples_artifact, schema_artifact,
                               baseline_blessing=[])
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert "resolved to no blessing" in report["verdict"]
    assert _push(tmp_path, model_artifact, blessing) == 0

  def test_blessing_of_another_model_gives_not_blessed(
      self, tmp_path, model_artifact, examples_artifact, schema_artifact):
    other = _blessing(tmp_path, current_model="/somewhere/else/model")
    blessing, _, report = _run(tmp_path, model_artifact, model_artifact,
                               examples_artifact, schema_artifact,
                               baseline_blessing=other)
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert report["reasons"] == [
        "`baseline_blessing` blesses another model than `baseline_model` "
        f"(current_model=/somewhere/else/model, baseline_model "
        f"{model_artifact.uri})"]


class TestEvidenceAndLabels:

  def test_too_few_examples_are_not_blessed(self, tmp_path, model_artifact,
                                            schema_artifact):
    examples = fixtures.write_examples(str(tmp_path), limit=30)  # 10 eval
    blessing, _, report = _run(tmp_path, model_artifact, model_artifact,
                               examples, schema_artifact)
    assert os.listdir(blessing.uri) == ["NOT_BLESSED"]
    assert "only 10 example(s) were evaluated" in report["verdict"]
    assert report["examples"]["min_examples"] == 100
    blessing, _, report = _run(tmp_path, model_artifact, model_artifact,
                               examples, schema_artifact, name="few_ok",
                               min_examples=10)
    assert os.listdir(blessing.uri) == ["BLESSED"], report["verdict"]

  def test_missing_labels_are_an_error(self, tmp_path, model_artifact):
    examples, schema = missing_label_examples(str(tmp_path))
    with pytest.raises(features.DataError,
                       match=r"50 of 100 examples of the 'eval' split have no "
                       r"value for `label_key`='label'"):
      _run(tmp_path, model_artifact, model_artifact, examples, schema,
           min_examples=1)
    assert not os.listdir(os.path.join(tmp_path, "out", "blessing"))


def missing_label_examples(root):
  """Digits whose every other example has no label; the schema's label VarLen.

  What SchemaGen infers from a CSV with empty label cells.
  """
  from tensorflow_transform.tf_metadata import schema_utils  # pylint: disable=g-import-not-at-top
  from tfx.utils import io_utils  # pylint: disable=g-import-not-at-top
  x, y = fixtures.digits_arrays()
  art = standard_artifacts.Examples()
  art.uri = os.path.join(root, "missing_label_examples")
  art.split_names = '["train", "eval"]'
  for split, rows in (("train", slice(0, 100)), ("eval", slice(100, 200))):
    d = os.path.join(art.uri, f"Split-{split}")
    os.makedirs(d)
    with tf.io.TFRecordWriter(os.path.join(d, "data.gz"), options="GZIP") as w:
      for i, (pixels, label) in enumerate(zip(x[rows], y[rows])):
        feats = {k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                 for k, v in zip(fixtures.FEATURES, pixels)}
        if i % 2:
          feats[fixtures.LABEL] = tf.train.Feature(
              int64_list=tf.train.Int64List(value=[int(label)]))
        w.write(tf.train.Example(features=tf.train.Features(
            feature=feats)).SerializeToString())
  spec = dict(fixtures.feature_spec())
  spec[fixtures.LABEL] = tf.io.VarLenFeature(tf.int64)
  schema = standard_artifacts.Schema()
  schema.uri = os.path.join(root, "varlen_label_schema")
  os.makedirs(schema.uri)
  io_utils.write_pbtxt_file(os.path.join(schema.uri, "schema.pbtxt"),
                            schema_utils.schema_from_feature_spec(spec))
  return art, schema


_KILL_SCRIPT = """
import os, signal, sys
import tfx_compression
from tfx.types import standard_artifacts
from tfx_compression.components.compression_evaluator import executor
base, examples_uri, schema_uri, out = sys.argv[1:5]

def killed(*args, **kwargs):  # SIGKILL where the outputs would be committed
  os.kill(os.getpid(), signal.SIGKILL)

executor._commit = killed
def art(cls, uri, **kw):
  a = cls()
  a.uri = uri
  for k, v in kw.items():
    setattr(a, k, v)
  return a
blessing = art(standard_artifacts.ModelBlessing, os.path.join(out, "blessing"))
evaluation = art(standard_artifacts.ModelEvaluation, os.path.join(out, "evaluation"))
os.makedirs(blessing.uri)
os.makedirs(evaluation.uri)
executor.Executor().Do(
    {"baseline_model": [art(standard_artifacts.Model, base)],
     "candidate_model": [art(standard_artifacts.Model, base)],
     "examples": [art(standard_artifacts.Examples, examples_uri,
                      split_names='["train", "eval"]')],
     "schema": [art(standard_artifacts.Schema, schema_uri)]},
    {"blessing": [blessing], "evaluation": [evaluation]},
    {"label_key": "label", "max_drop": 0.01, "latency_samples": 0})
"""


def test_sigkill_before_the_commit_leaves_no_blessing(
    tmp_path, model_artifact, schema_artifact):
  """Killed after the blessing file and report are written (in the stage),
  before they are committed: the output directories stay empty."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  examples = fixtures.write_examples(str(tmp_path), limit=150)
  out = tmp_path / "killed"
  proc = subprocess.run(
      [sys.executable, "-c", _KILL_SCRIPT, model_artifact.uri, examples.uri,
       schema_artifact.uri, str(out)],
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert os.listdir(out / "blessing") == []
  assert os.listdir(out / "evaluation") == []
