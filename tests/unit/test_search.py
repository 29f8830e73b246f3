"""The iterative pruning search: continuation, stopping rule, emitted model, errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import thresholds
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import keras2_magnitude
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import search


def tiny_data(n=256, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8)).astype(np.float32)
  y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(32)


def tiny_model(seed=0):
  keras.utils.set_random_seed(seed)
  inp = keras.Input((8,), name="x")
  h = keras.layers.Dense(32, activation="relu", name="hidden")(inp)
  out = keras.layers.Dense(2, activation="softmax", name="out")(h)
  m = keras.Model({"x": inp}, out)
  m.compile("adam", "sparse_categorical_crossentropy")
  m.fit(tiny_data().repeat(), steps_per_epoch=60, verbose=0)
  return m


@pytest.fixture(scope="module")
def model():
  return tiny_model()


def cfg(**kw):
  base = dict(label_key="y", search_sparsities="0.3,0.5,0.7,0.9", search_steps=20,
              max_drop=0.05, learning_rate=1e-3)
  base.update(kw)
  return config_lib.PrunerConfig(**base)


class FakeStage:
  """Zeroes a growing share of the hidden kernel; accuracy falls past a point."""

  def __init__(self):
    self.calls = []

  def __call__(self, current, train_ds, config, sparsity, state, **kw):
    self.calls.append((search.weights_digest(current), sparsity))
    new = keras.models.clone_model(current)
    new.set_weights(current.get_weights())
    k, b = new.get_layer("hidden").get_weights()
    order = np.argsort(np.abs(k), axis=None)
    k.flat[order[:int(0.1 * sparsity * k.size)]] = 0  # small: accuracy holds
    if sparsity >= 0.7:  # wreck the model: the gate must fail here
      k[:] = 0
    new.get_layer("hidden").set_weights([k, b])
    return pruning.PruneResult(model=new, structure="unstructured",
                               pruned_layers=["hidden"],
                               stats=keras2_magnitude.pruning_stats(new, ["hidden"]),
                               metrics={}, baseline_metrics={}, info={},
                               target_sparsity=sparsity)


def test_stops_at_first_failure_and_emits_the_last_passing_model(model):
  stage = FakeStage()
  result = search.search_sparsity(model, tiny_data(), tiny_data(), cfg(),
                                  thresholds.GateThresholds(max_drop=0.05),
                                  loss="sparse_categorical_crossentropy",
                                  stage_fn=stage)
  assert [s.sparsity for s in result.steps] == [0.3, 0.5, 0.7]
  assert [s.passed for s in result.steps] == [True, True, False]
  assert result.chosen.sparsity == 0.5
  # Bit for bit: the emitted model is the evaluated model of the chosen step.
  assert search.weights_digest(result.model) == result.steps[1].weights_sha256
  # Each step started from the previous step's output, not from the baseline.
  assert stage.calls[1][0] == result.steps[0].weights_sha256
  assert stage.calls[2][0] == result.steps[1].weights_sha256
  assert len(stage.calls) == 3  # linear: one stage per step, stopped at failure


def test_first_step_failing_raises_with_its_figures(model):
  with pytest.raises(search.SearchError, match=r"first step.*sparsity 0.3.*min_value|"
                     r"first step.*sparsity 0.3"):
    search.search_sparsity(model, tiny_data(), tiny_data(), cfg(),
                           thresholds.GateThresholds(min_value=1.01),
                           loss="sparse_categorical_crossentropy",
                           stage_fn=FakeStage())


def test_real_steps_keep_earlier_zeros_and_reach_each_sparsity(model):
  config = cfg(search_sparsities="0.4,0.6", max_drop=0.5)
  seen = []

  def spy(current, *args, **kw):
    out = search._stage(current, *args, **kw)  # pylint: disable=protected-access
    seen.append(out.model.get_layer("hidden").get_weights()[0] == 0)
    return out

  result = search.search_sparsity(model, tiny_data(), tiny_data(), config,
                                  config.gate(), loss="sparse_categorical_crossentropy",
                                  stage_fn=spy)
  assert [round(m.mean(), 2) for m in seen] == [0.4, 0.6]
  assert np.all(seen[1][seen[0]])  # every zero of step 0 is still zero
  assert result.chosen.sparsity == 0.6
  assert model.get_layer("hidden").get_weights()[0].all()  # input untouched


def test_channels_search_narrows_step_by_step(model):
  config = cfg(sparsity_structure="channels", search_sparsities="0.25,0.5",
               max_drop=0.5, finetune_steps=5)
  result = search.search_sparsity(model, tiny_data(), tiny_data(), config,
                                  config.gate(), loss="sparse_categorical_crossentropy")
  assert result.chosen.sparsity == 0.5
  assert result.model.get_layer("hidden").units == 16
  assert result.steps[0].param_count > result.steps[1].param_count


def test_m_by_n_sparsities_map_to_blocks():
  assert search.stage_sparsities(cfg(sparsity_structure="2:4",
                                     search_sparsities="0.25,0.5,0.6,0.75")) == [
                                         0.25, 0.5, 0.75]


class TestConfig:

  def test_thresholds_need_the_search(self):
    with pytest.raises(ValueError, match="search_sparsities"):
      config_lib.PrunerConfig(label_key="y", max_drop=0.01)

  def test_search_needs_a_threshold_with_the_evaluators_message(self):
    with pytest.raises(ValueError) as ours:
      config_lib.PrunerConfig(label_key="y", search_sparsities="0.5,0.6")
    with pytest.raises(ValueError) as evaluators:
      thresholds.GateThresholds(metric="accuracy")
    assert str(ours.value) == str(evaluators.value)

  @pytest.mark.parametrize("value,needle", [
      ("0.5,0.4", "rise strictly"), ("0.5,1.2", "outside"), ("0.5,x", "not a number"),
  ])
  def test_bad_sparsities(self, value, needle):
    with pytest.raises(ValueError, match=needle):
      config_lib.PrunerConfig(label_key="y", search_sparsities=value, max_drop=0.01)

  def test_bad_threshold_value_same_rule_as_evaluator(self):
    with pytest.raises(ValueError, match="max_drop"):
      config_lib.PrunerConfig(label_key="y", search_sparsities="0.5",
                              max_drop=-0.1)

  def test_component_rejects_at_definition(self):
    from tfx import v1 as tfx
    from tfx.types import standard_artifacts
    from tfx_compression import Pruner
    with pytest.raises(ValueError, match="max_relative_drop"):
      Pruner(model=tfx.dsl.Channel(type=standard_artifacts.Model),
             examples=tfx.dsl.Channel(type=standard_artifacts.Examples),
             schema=tfx.dsl.Channel(type=standard_artifacts.Schema),
             label_key="label", search_sparsities=[0.5, 0.7],
             max_relative_drop=2.0)


def test_unstructured_steps_share_one_wrapped_model_and_emit_the_chosen_weights(
    model, monkeypatch):
  wraps = []
  real_wrap = keras2_magnitude._wrap  # pylint: disable=protected-access

  def counting_wrap(*args, **kw):
    wraps.append(1)
    return real_wrap(*args, **kw)

  monkeypatch.setattr(keras2_magnitude, "_wrap", counting_wrap)
  config = cfg(search_sparsities="0.4,0.6,0.99", max_drop=0.05)
  result = search.search_sparsity(model, tiny_data(), tiny_data(), config,
                                  config.gate(), loss="sparse_categorical_crossentropy")
  assert [s.passed for s in result.steps] == [True, True, False]
  assert len(wraps) == 1  # no re-wrapping, recompiling or retracing per step
  # The later, failed step trained the shared model on; the emitted model is
  # still the chosen step's, bit for bit.
  assert search.weights_digest(result.model) == result.steps[1].weights_sha256
  assert result.steps[2].weights_sha256 != result.steps[1].weights_sha256
  hidden = result.model.get_layer("hidden").get_weights()[0]
  assert round(float((hidden == 0).mean()), 2) == 0.6


def test_staged_schedule_moves_its_target_without_a_new_trace():
  schedule = schedules.StagedSchedule("polynomial", frequency=10)
  schedule.set_stage(0.0, 0.5, begin_step=1, end_step=101)
  fn = tf.function(schedule)
  prune, sparsity = fn(tf.constant(101, tf.int64))
  assert bool(prune) and float(sparsity) == pytest.approx(0.5)
  schedule.set_stage(0.5, 0.8, begin_step=201, end_step=301)
  prune, sparsity = fn(tf.constant(201, tf.int64))
  assert bool(prune) and float(sparsity) == pytest.approx(0.5)
  assert float(fn(tf.constant(301, tf.int64))[1]) == pytest.approx(0.8)
  assert not bool(fn(tf.constant(205, tf.int64))[0])  # not a mask-update step
  assert fn.experimental_get_tracing_count() == 1
