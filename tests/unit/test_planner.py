"""The compression plan search: config rules, the choice, the emitted bytes, the cost."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.compression_evaluator import predictors
from tfx_compression.components.compression_planner import config as config_lib
from tfx_compression.components.compression_planner import planning
from tfx_compression.components.quantizer import quantization
from tests import fixtures

LOSS = "sparse_categorical_crossentropy"


def data(n=256, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16)).astype(np.float32)
  y = (x[:, :4].argmax(axis=1)).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(32)


@pytest.fixture(scope="module")
def model():
  m = fixtures.tiny_model()
  m.compile("adam", LOSS)
  m.fit(data().repeat(), steps_per_epoch=300, verbose=0)
  return m


def cfg(**kw):
  base = dict(label_key="y", max_drop=0.1, sparsities="0.3,0.5,0.7",
              search_steps=10, finetune_steps=2, quantization_modes="int8,float16",
              latency_samples=5, num_representative_samples=32)
  base.update(kw)
  return config_lib.PlannerConfig(**base)


# The config.


@pytest.mark.parametrize("kw, error, match", [
    (dict(structures="channels,stripes"), ValueError,
     r"`structures`='channels,stripes': 'stripes' is not a structure\. Use "
     r"'channels', 'unstructured', an M:N block"),
    (dict(quantization_modes="int8,int4"), ValueError,
     r"`quantization_modes`='int8,int4': 'int4' is not a mode .* subset of "
     r"int8, float16, dynamic, none"),
    (dict(quantization_modes=""), ValueError, r"lists no mode"),
    (dict(objective="accuracy"), ValueError,
     r"`objective`='accuracy' is not one of \('size', 'gzip_size', "
     r"'latency'\)"),
    (dict(objective="latency", latency_samples=0), ValueError,
     r"`latency_samples`=0 but objective='latency'"),
    (dict(max_drop=None), ValueError, r"at least one of `max_drop`"),
    (dict(sparsities="0.5,0.4"), ValueError, r"must rise strictly"),
    (dict(search_steps=0), ValueError, r"`search_steps`=0 must be >= 1"),
    (dict(search_steps=1.5), TypeError, r"`search_steps` must be an integer"),
    (dict(pack_inputs=2), ValueError, r"`pack_inputs`=2 must be 0 or 1"),
    (dict(structures=3), TypeError, r"`structures` must be a comma-separated"),
])
def test_config_names_parameter_value_and_what_is_allowed(kw, error, match):
  with pytest.raises(error, match=match):
    cfg(**kw)


def test_config_orders_channels_first_and_normalizes():
  c = cfg(structures=["unstructured", "2:4", "Channels+Unstructured",
                      "channels"], quantization_modes="NONE,int8")
  assert c.structures == ("channels", "channels+unstructured", "2:4",
                          "unstructured")
  assert c.quantization_modes == ("none", "int8")
  assert c.tflite_modes == ("int8",)
  assert c.pruner_config("channels+unstructured").sparsity_structure == (
      "unstructured")


# The choice.


def cand(index, raw, metric, passed=True, gzip=100, latency=1.0):
  return planning.Candidate(
      index=index, structure="channels", sparsity=0.5, mode="int8",
      kind="tflite", packed=False, metric=metric, passed=passed,
      why_not=None if passed else "failed", raw_bytes=raw, gzip_bytes=gzip,
      latency_us=latency, sha256=None, weight_sparsity=None, file=None)


def test_choice_is_the_smallest_passing_ties_to_the_better_metric():
  cands = [cand(0, 500, 0.95), cand(1, 100, 0.90, passed=False),
           cand(2, 300, 0.93), cand(3, 300, 0.94), cand(4, 300, 0.94)]
  assert planning.choose(cands, "size", higher_is_better=True).index == 3
  # Lower-is-better metric: the tie goes to the smaller value.
  assert planning.choose(cands, "size", higher_is_better=False).index == 2
  # Equal latencies: the best metric among the passing wins.
  assert planning.choose(cands, "latency", True).index == 0
  assert planning.choose([cands[1]], "size", True) is None


def test_a_saved_model_is_skipped_when_a_passing_tflite_of_it_is_smaller():
  import types  # pylint: disable=g-import-not-at-top
  converted = [cand(0, 3000, 0.9, gzip=2000), cand(1, 2000, 0.8, passed=False)]
  why = planning._Planner.saved_model_dominated(
      types.SimpleNamespace(config=cfg()), converted)
  assert "int8 TFLite conversion passed with 3,000 bytes" in why
  assert planning._Planner.saved_model_dominated(
      types.SimpleNamespace(config=cfg(objective="latency")), converted) is None
  assert planning._Planner.saved_model_dominated(
      types.SimpleNamespace(config=cfg()), converted[1:]) is None


# The search, on a tiny model.


class CountingStage:
  """Runs the real pruning step and counts its fine-tuning steps."""

  def __init__(self):
    self.calls = []

  def __call__(self, strategy, current, train_ds, config, sparsity, state,
               **kw):
    self.calls.append((config.sparsity_structure, sparsity,
                       config.stage_steps()))
    return planning._stage(strategy, current, train_ds, config, sparsity,
                           state, **kw)


@pytest.fixture(scope="module")
def counted_plan(model, tmp_path_factory):
  stage = CountingStage()
  conversions = []
  real = quantization.quantize

  def counting_quantize(m, config, **kw):
    conversions.append(config.quantization)
    return real(m, config, **kw)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(quantization, "quantize", counting_quantize)
    plan = planning.search_plan(
        model, data().repeat(), data(seed=1),
        cfg(structures="channels,unstructured", objective="gzip_size",
            sparsities="0.3,0.6"),
        loss=LOSS, work_dir=str(tmp_path_factory.mktemp("plan")),
        stage_fn=stage)
  return plan, stage.calls, conversions


def test_chosen_is_the_best_passing_candidate_of_the_plan(counted_plan):
  plan, _, _ = counted_plan
  data_ = plan.to_dict()
  passing = [c for c in data_["candidates"] if c["passed"]]
  assert passing and len(passing) < len(data_["candidates"]) + 1
  best = min(c["gzip_bytes"] for c in passing)
  chosen = data_["candidates"][data_["chosen_index"]]
  assert chosen["passed"] and chosen["gzip_bytes"] == best
  assert max(c["metric"] for c in passing if c["gzip_bytes"] == best) == (
      chosen["metric"])
  # A failing candidate is never the chosen one, whatever its size.
  for c in data_["candidates"]:
    assert c["passed"] == (c["why_not"] is None)


def test_chosen_file_is_the_measured_bytes(counted_plan):
  plan, _, _ = counted_plan
  chosen = plan.chosen
  with open(chosen.file, "rb") as f:
    content = f.read()
  assert hashlib.sha256(content).hexdigest() == chosen.sha256
  assert len(content) == chosen.raw_bytes
  # Measuring that file again gives the recorded metric.
  pred = predictors.TFLitePredictor(model_content=content,
                                    io=plan.ios[chosen.index])
  metrics, _ = planning.metrics_of(pred.predict, data(seed=1),
                                   "probabilities")
  assert metrics["accuracy"] == chosen.metric


def test_cost_grows_with_steps_plus_modes_not_their_product(counted_plan):
  plan, calls, conversions = counted_plan
  # One fine-tuning per step tried, of search_steps each, whatever the modes.
  assert [(s, sp) for s, sp, _ in calls] == [
      (s.structure, s.sparsity) for s in plan.steps]
  assert sum(n for _, _, n in calls) == len(plan.steps) * 10
  # Each structure stops at its first failing step.
  for structure in ("channels", "unstructured"):
    passed = [s.passed for s in plan.steps if s.structure == structure]
    assert passed and all(passed[:-1])
  # One conversion per passing step (and the unpruned model) and mode.
  passing_steps = sum(s.passed for s in plan.steps)
  assert len(conversions) == (passing_steps + 1) * 2
  assert sorted(set(conversions)) == ["float16", "int8"]


def test_size_objective_skips_a_structure_that_cannot_be_smaller(model,
                                                                 tmp_path):
  stage = CountingStage()
  plan = planning.search_plan(model, data().repeat(), data(seed=1),
                              cfg(structures="unstructured,2:4"), loss=LOSS,
                              work_dir=str(tmp_path), stage_fn=stage)
  assert stage.calls == []  # no fine-tuning at all
  assert [s["structure"] for s in plan.skipped] == ["2:4", "unstructured"]
  assert "dense" in plan.skipped[0]["why"]
  assert plan.chosen.structure == "none"


def _bound(objective, candidates, structure="unstructured", start=(0,)):
  import types  # pylint: disable=g-import-not-at-top
  planner = types.SimpleNamespace(config=cfg(objective=objective),
                                  candidates=candidates)
  return planning._Planner.dense_bound_skip(planner, structure, list(start))


def test_latency_bound_skips_only_beyond_timing_noise():
  start = cand(0, 3000, 0.9, latency=10.0)
  # A passing candidate at 0.8x of the starting model's latency: skipped.
  why = _bound("latency", [start, cand(1, 900, 0.9, latency=8.0)])
  assert "dense kernels" in why and "10.0 us" in why and "0.80x" in why
  # 0.81x could be noise: the climb runs.
  assert _bound("latency", [start, cand(1, 900, 0.9, latency=8.1)]) is None
  # A faster candidate that failed the gate bounds nothing.
  assert _bound("latency", [start, cand(1, 900, 0.9, passed=False,
                                        latency=1.0)]) is None
  # Channels pruning is never bounded; nor is gzip_size.
  fast = [start, cand(1, 900, 0.9, latency=2.0)]
  assert _bound("latency", fast, structure="channels") is None
  assert _bound("gzip_size", fast) is None
  # The size bound is as before: a passing candidate at most the start's
  # raw bytes (the start's own conversion failed the gate here).
  failed = cand(0, 3000, 0.9, passed=False)
  assert "3,000 raw bytes" in _bound("size", [failed, cand(1, 3000, 0.9)])
  assert _bound("size", [failed, cand(1, 3001, 0.9)]) is None


def test_latency_objective_skips_unstructured_after_faster_channels(
    model, tmp_path, monkeypatch):
  # Latency made a steep function of the model's bytes (the tiny model's
  # TFLite file is mostly overhead), so that the narrow models of the
  # channels climb are faster and the unstructured ones, stored densely,
  # are not.
  monkeypatch.setattr(planning._Planner, "_latency",
                      lambda self, pred: (len(pred.content) / 1000.0) ** 8)
  stage = CountingStage()
  plan = planning.search_plan(
      model, data().repeat(), data(seed=1),
      cfg(structures="channels,unstructured", objective="latency",
          sparsities="0.3", quantization_modes="int8"),
      loss=LOSS, work_dir=str(tmp_path), stage_fn=stage)
  assert [c[0] for c in stage.calls] == ["channels"]  # no unstructured step
  assert [s["structure"] for s in plan.skipped] == ["unstructured"]
  assert "dense kernels" in plan.skipped[0]["why"]
  assert plan.chosen.structure == "channels"


def test_no_passing_candidate_names_the_best_figures(model, tmp_path):
  with pytest.raises(planning.PlanError,
                     match=r"No compression plan passes the gate .* the best "
                           r"candidate, none 0 (int8|float16), has accuracy "
                           r"0\.\d{4} against the baseline's 0\.\d{4}"):
    planning.search_plan(model, data().repeat(), data(seed=1),
                         cfg(structures="", min_value=0.999, max_drop=None),
                         loss=LOSS, work_dir=str(tmp_path))


# add_compression(plan=True).


def _channels():
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  return dict(model=tfx.dsl.Channel(type=standard_artifacts.Model),
              examples=tfx.dsl.Channel(type=standard_artifacts.Examples),
              schema=tfx.dsl.Channel(type=standard_artifacts.Schema),
              label_key="label", push_destination="/tmp/serving")


def test_add_compression_with_a_plan_wires_planner_gate_pusher():
  from tfx_compression import add_compression  # pylint: disable=g-import-not-at-top
  result = add_compression(**_channels(), plan=True, objective="latency",
                           max_drop=0.005,
                           planner_kwargs=dict(structures="channels"))
  assert [c.id for c in result.components] == [
      "CompressionPlanner", "CompressionEvaluator", "CompressedModelPusher"]
  assert result.pruner is None and result.quantizer is None
  assert result.candidate is result.planner.outputs["compressed_model"]
  assert result.evaluator.inputs["candidate_model"] is result.candidate
  assert result.pusher.inputs["model"] is result.candidate
  # One gate: the planner searches within the evaluator's thresholds.
  props = result.planner.exec_properties
  assert (props["max_drop"], props["objective"]) == (0.005, "latency")
  assert result.evaluator.exec_properties["max_drop"] == 0.005


def test_add_compression_with_a_plan_refuses_pruner_kwargs():
  from tfx_compression import add_compression  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"pass those parameters in "
                                       r"`planner_kwargs` instead"):
    add_compression(**_channels(), plan=True,
                    pruner_kwargs=dict(train_steps=10))


# The evaluator's report draws the plan.


def test_pareto_front_keeps_only_undominated_points():
  from tfx_compression.components.compression_evaluator import report_plots  # pylint: disable=g-import-not-at-top
  pts = [(10, 0.90), (5, 0.95), (20, 0.99), (5, 0.91), (30, 0.98)]
  assert report_plots.pareto_front(pts, higher=True) == [1, 2]
  assert report_plots.pareto_front(pts, higher=False) == [3, 0]


def test_the_report_draws_the_front_and_lists_the_candidates():
  import dataclasses  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.common import evaluation_report  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.compression_evaluator import report  # pylint: disable=g-import-not-at-top
  from tests.unit import test_report  # pylint: disable=g-import-not-at-top
  cands = [dict(index=i, structure=s, sparsity=sp, mode=m, metric=acc,
                raw_bytes=b, gzip_bytes=b // 2, latency_us=lat, passed=p,
                why_not=None if p else "max_drop FAILED")
           for i, (s, sp, m, acc, b, lat, p) in enumerate([
               ("none", 0.0, "int8", 0.95, 300_000, 20.0, True),
               ("channels", 0.75, "int8", 0.948, 24_000, 2.6, True),
               ("channels", 0.75, "float16", 0.949, 45_000, 6.0, True),
               ("channels", 0.85, "int8", 0.90, 18_000, 2.2, False)])]
  plan = {"objective": "size", "metric_name": "accuracy", "chosen_index": 1,
          "baseline": {"metric": 0.951}, "candidates": cands,
          "skipped": [{"structure": "unstructured", "why": "dense"}]}
  rep = dataclasses.replace(test_report.make_report(), plan=plan)
  files = report.render(rep)
  html = next(v for k, v in files.items() if k.endswith(".html"))
  assert "Plan: accuracy against size (Pareto front)" in html
  assert "Plan: accuracy against latency (Pareto front)" in html
  assert "chosen: channels int8" in html
  md = next(v for k, v in files.items() if k.endswith(".md"))
  assert "## Compression plan" in md and "| **1 | channels | 0.75 | int8" in md
  assert "no: max_drop FAILED" in md
  # report.json keeps the plan, and reads back.
  js = next(v for k, v in files.items() if k.endswith(".json"))
  assert evaluation_report.EvaluationReport.from_json(js).plan == plan
  # Without a plan: no section, no key (the layout other reports always had).
  plain = report.render(test_report.make_report())
  assert all("Compression plan" not in v and '"plan"' not in v
             for v in plain.values())


# Distillation in the plan.


class LossSpyStage(CountingStage):
  """Records the loss and the train batches every step is given."""

  def __init__(self):
    super().__init__()
    self.seen = []

  def __call__(self, strategy, current, train_ds, config, sparsity, state,
               **kw):
    self.seen.append((kw["loss"], train_ds))
    return super().__call__(strategy, current, train_ds, config, sparsity,
                            state, **kw)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_every_step_of_every_structure_distils_towards_the_input_model(
    model, tmp_path, weight):
  stage = LossSpyStage()
  exported = []
  train = data().repeat()

  def export(result, path):
    exported.append(getattr(result.model, "loss", None))
    tf.io.gfile.makedirs(path)
    with open(f"{path}/weights.bin", "wb") as f:
      f.write(b"".join(w.tobytes() for w in result.model.get_weights()))

  planning.search_plan(
      model, train, data(seed=1),
      cfg(structures="channels,unstructured", objective="gzip_size",
          sparsities="0.3", quantization_modes="none", latency_samples=0,
          distillation_weight=weight),
      loss=LOSS, work_dir=str(tmp_path), stage_fn=stage, export_fn=export)
  assert len(stage.seen) == 2  # one step per structure
  losses = {id(l) for l, _ in stage.seen}
  datasets = {id(d) for _, d in stage.seen}
  assert len(losses) == 1 and len(datasets) == 1  # one teacher for the plan
  loss, ds = stage.seen[0]
  if weight == 0:
    assert loss == LOSS and ds is train  # today's fine-tuning, untouched
  else:
    assert loss != LOSS and ds is not train
    # The labels carry the input model's outputs beside the true class.
    features, labels = next(iter(ds))
    packed = np.asarray(labels)
    teacher = np.asarray(model(features, training=False))
    np.testing.assert_allclose(packed[:, 1:], teacher, rtol=1e-5, atol=1e-6)
  # The SavedModel candidates are saved with the model's own loss.
  assert exported
  if weight:
    assert all(l == LOSS for l in exported)


# Keras 3: the model TFX 1.21's Trainer examples write.


def test_keras3_model_is_planned_by_the_keras3_backends(tmp_path):
  """The same search on a Keras 3 model: its steps run on the Keras 3 backends
  (no tf_keras model is made), the choice is the best passing candidate and
  the emitted file is the one measured."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  k3 = fixtures.tiny_model(keras_module=keras)
  k3.compile("adam", LOSS)
  k3.fit(data().repeat(), steps_per_epoch=300, verbose=0)
  backends = []

  def stage(strategy, current, train_ds, config, sparsity, state, **kw):
    backends.append(strategy_lib.backend(current).__name__)
    assert isinstance(current, keras.Model)
    return planning._stage(strategy, current, train_ds, config, sparsity,
                           state, **kw)

  plan = planning.search_plan(
      k3, data().repeat(), data(seed=1),
      cfg(structures="channels,unstructured", objective="gzip_size",
          sparsities="0.3,0.6", quantization_modes="int8"),
      loss=LOSS, work_dir=str(tmp_path), stage_fn=stage)
  assert backends and all("keras3" in b for b in backends), backends
  result = plan.to_dict()
  passing = [c for c in result["candidates"] if c["passed"]]
  chosen = result["candidates"][result["chosen_index"]]
  assert chosen["passed"]
  assert chosen["gzip_bytes"] == min(c["gzip_bytes"] for c in passing)
  assert {c["structure"] for c in result["candidates"]} >= {"channels",
                                                            "unstructured"}
  with open(plan.chosen.file, "rb") as f:
    content = f.read()
  assert hashlib.sha256(content).hexdigest() == plan.chosen.sha256
  pred = predictors.TFLitePredictor(model_content=content,
                                    io=plan.ios[plan.chosen.index])
  metrics, _ = planning.metrics_of(pred.predict, data(seed=1), "probabilities")
  assert metrics["accuracy"] == plan.chosen.metric
