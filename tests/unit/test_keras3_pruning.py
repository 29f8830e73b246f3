"""Unit tests of the Keras 3 magnitude-pruning backend (keras3_magnitude), on tiny models.

The schedule and the masks are checked against tfmot's own code on the same
parameters and weights (tfmot is imported inside those tests only: its import
sets TF_USE_LEGACY_KERAS=1, which does not change the ``keras`` package used here).
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfx_compression.components.pruner import keras3_magnitude as km
from tfx_compression.components.pruner.config import PrunerConfig
from tests.assertions import assert_same_weights

STEPS = 40
LOSS = keras.losses.SparseCategoricalCrossentropy()


def tiny_model(seed: int = 0, inputs_dim: int = 16) -> keras.Model:
  """16 inputs -> Dense 32 -> Dense 8 -> Dense 4 softmax; named layers."""
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape=(inputs_dim,), name="x")
  h = keras.layers.Dense(32, activation="relu", name="d1")(inputs)
  h = keras.layers.Dense(8, activation="relu", name="d2")(h)
  out = keras.layers.Dense(4, activation="softmax", name="out")(h)
  return keras.Model(inputs, out)


def tiny_conv_model(seed: int = 0) -> keras.Model:
  keras.utils.set_random_seed(seed)
  inputs = keras.Input(shape=(16,), name="x")
  x = keras.layers.Reshape((4, 4, 1))(inputs)
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(x)
  x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c2")(x)
  x = keras.layers.Flatten()(x)
  out = keras.layers.Dense(4, activation="softmax", name="out")(x)
  return keras.Model(inputs, out)


def tiny_data(seed: int = 0, n: int = 256, nan: bool = False,
              dim: int = 16) -> tf.data.Dataset:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, dim)).astype(np.float32)
  y = (x[:, :4].argmax(axis=1)).astype(np.int64)
  if nan:
    x[:] = np.nan
  return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
      n, seed=seed).batch(32)


def assert_kernel_sparsity(model, names, target, tol=0.01):
  """Each named layer's kernel has target +- tol zeros."""
  for name in names:
    kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
    achieved = float((kernel == 0).mean())
    assert abs(achieved - target) <= tol, (name, achieved, target)


# Schedules and masks against tfmot's own code.


def _tfmot_schedules():
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule  # pylint: disable=g-import-not-at-top
  return pruning_schedule


@pytest.mark.parametrize("kind,args", [
    ("polynomial", dict(initial_sparsity=0.0, final_sparsity=0.8,
                        begin_step=1, end_step=101, frequency=10)),
    ("polynomial", dict(initial_sparsity=0.3, final_sparsity=0.93,
                        begin_step=5, end_step=61, frequency=7)),
    ("constant", dict(final_sparsity=0.6, begin_step=3, end_step=40,
                      frequency=4)),
    ("constant", dict(final_sparsity=0.5, begin_step=2, end_step=-1,
                      frequency=9)),
])
def test_schedule_matches_tfmot_step_by_step(kind, args):
  ps = _tfmot_schedules()
  if kind == "polynomial":
    theirs = ps.PolynomialDecay(**args)
  else:
    theirs = ps.ConstantSparsity(args["final_sparsity"], args["begin_step"],
                                 args["end_step"], args["frequency"])
  ours = km.Schedule(kind, **args)
  updates = 0
  for step in range(0, 130):
    should, sparsity = theirs(tf.constant(step, tf.int64))
    mine = ours(step)
    assert mine[0] == bool(should), step
    assert np.float32(mine[1]) == np.float32(sparsity.numpy()), step
    updates += mine[0]
  assert updates >= 5  # Not vacuous: the mask is updated on several steps.


def test_make_schedule_counts_steps_as_the_tfmot_path():
  from tfx_compression.components.pruner import schedules  # pylint: disable=g-import-not-at-top
  theirs = schedules.make_schedule(0.8, 0.1, "polynomial", 0, 210, 10)
  ours = km.make_schedule(0.8, 0.1, "polynomial", 0, 210, 10)
  for step in range(0, 300):
    should, sparsity = theirs(tf.constant(step, tf.int64))
    assert ours(step) == (bool(should), float(sparsity.numpy())), step
  assert ours.should_prune(1) and not ours.should_prune(0)


def _tfmot_magnitude_mask(weights, sparsity):
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl  # pylint: disable=g-import-not-at-top
  schedule = _tfmot_schedules().ConstantSparsity(sparsity, 0)
  impl = pruning_impl.Pruning(lambda: tf.constant(1, tf.int64), [], schedule,
                              (1, 1), "AVG")
  return impl._update_mask(tf.constant(weights))[1].numpy()  # pylint: disable=protected-access


@pytest.mark.parametrize("shape", [(16, 8), (3, 3, 4, 8), (40,)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.97])
def test_magnitude_mask_matches_tfmot(shape, sparsity):
  rng = np.random.default_rng(1)
  # Rounded: many equal magnitudes, so the tie rule is exercised.
  weights = np.round(rng.normal(size=shape), 1).astype(np.float32)
  ours = km.magnitude_mask(weights, sparsity)
  np.testing.assert_array_equal(ours, _tfmot_magnitude_mask(weights, sparsity))
  if sparsity:
    assert (ours == 0).any()


def _tfmot_m_by_n_mask(weights, m_by_n):
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils as u  # pylint: disable=g-import-not-at-top
  w = tf.constant(weights)
  mask = u.generate_m_by_n_mask(u.weights_rearrange(w), m_by_n)
  return u.m_by_n_sparsity_mask_prepare(mask, w.shape).numpy()


@pytest.mark.parametrize("shape,m_by_n", [
    ((16, 8), (2, 4)), ((3, 3, 8, 4), (2, 4)), ((6, 5), (2, 4)),
    ((16, 3), (1, 4)), ((2, 2, 16, 3), (3, 8))])
def test_m_by_n_mask_matches_tfmot(shape, m_by_n):
  rng = np.random.default_rng(2)
  weights = rng.integers(-3, 4, size=shape).astype(np.float32)  # ties
  ours = km.m_by_n_mask(weights, m_by_n)
  np.testing.assert_array_equal(ours, _tfmot_m_by_n_mask(weights, m_by_n))
  if shape[-2] % m_by_n[1] == 0:
    assert km.m_by_n_violations(weights * ours, m_by_n) == 0


def test_masks_change_exactly_on_tfmot_update_steps():
  """The kernel seen by each forward pass has tfmot's zero count at that step."""
  seen = []

  class Record(keras.callbacks.Callback):

    def on_train_batch_begin(self, batch, logs=None):  # runs after the masking
      kernel = keras.ops.convert_to_numpy(self.model.get_layer("d1").kernel)
      seen.append(int((kernel == 0).sum()))

  pruned = km.prune_to(tiny_model(), tiny_data(), target_sparsity=0.75,
                       steps=20, loss=LOSS, layers=["d1"], begin_step=2,
                       end_step=12, frequency=5, callbacks=[Record()])
  theirs = _tfmot_schedules().PolynomialDecay(0.0, 0.75, 3, 13, frequency=5)
  size, zeros, expected = 16 * 32, 0, []
  for step in range(1, 21):
    should, sparsity = theirs(tf.constant(step, tf.int64))
    if should:
      keep = max(np.round(np.float32(size) * (1 - sparsity.numpy())), 1)
      zeros = size - int(keep)
    expected.append(zeros)
  assert seen == expected
  # Updates at tfmot steps 3 (sparsity 0), 8 and 13: the count moves at 8, 13.
  changes = [s + 1 for s in range(1, 20) if expected[s] != expected[s - 1]]
  assert changes == [8, 13]
  assert_kernel_sparsity(pruned, ["d1"], 0.75, tol=0.002)


# Pruning.


def test_unstructured_reaches_target_and_leaves_input_alone():
  model = tiny_model()
  before = [w.copy() for w in model.get_weights()]
  pruned = km.prune_to(model, tiny_data(), target_sparsity=0.75,
                       steps=STEPS, loss=LOSS, layers=["d1", "d2"])
  assert_kernel_sparsity(pruned, ["d1", "d2"], 0.75)
  # Not selected: untouched by the mask.
  assert (keras.ops.convert_to_numpy(pruned.get_layer("out").kernel) != 0).all()
  assert_same_weights(before, model.get_weights())
  assert [l.name for l in pruned.layers] == [l.name for l in model.layers]
  assert len(pruned.weights) == len(model.weights)  # No mask variables.


def test_constant_schedule_reaches_target():
  pruned = km.prune_to(tiny_model(), tiny_data(), target_sparsity=0.5,
                       steps=STEPS, loss=LOSS, schedule="constant")
  assert_kernel_sparsity(pruned, ["d1", "d2", "out"], 0.5)


@pytest.mark.parametrize("build,layers", [
    (tiny_model, ("d1", "d2", "out")), (tiny_conv_model, ("c2", "out"))])
def test_m_by_n_blocks(build, layers):
  pruned = km.prune_to(build(), tiny_data(), target_sparsity=0.0,
                       steps=STEPS, loss=LOSS, m_by_n=(2, 4))
  kernels = km.pruned_kernels(pruned, km.select_layers(pruned, m_by_n=(2, 4)))
  assert sorted(k.split("/")[0] for k in kernels) == sorted(layers)
  for name, kernel in kernels.items():
    assert km.m_by_n_violations(kernel, (2, 4)) == 0, name
    assert (kernel == 0).mean() == pytest.approx(0.5)


def test_m_by_n_check_can_fail():
  dense = np.ones((8, 3), np.float32)
  assert km.m_by_n_violations(dense, (2, 4)) == 6  # 3 outputs x 2 blocks
  conv = np.ones((3, 3, 8, 2), np.float32)
  conv[:, :, 0:2, :] = 0     # first block of the input dim: 2 zeros each
  assert km.m_by_n_violations(conv, (2, 4)) == 9 * 2  # the second block


def test_same_seed_same_weights_and_masks():
  runs = [km.prune_to(tiny_model(), tiny_data(), target_sparsity=0.6,
                      steps=STEPS, loss=LOSS, seed=3) for _ in range(2)]
  assert_same_weights(runs[0].get_weights(), runs[1].get_weights())
  # Not vacuous: the runs trained (the surviving weights moved).
  start = keras.ops.convert_to_numpy(tiny_model().get_layer("d1").kernel)
  end = keras.ops.convert_to_numpy(runs[0].get_layer("d1").kernel)
  assert not np.allclose(start[end != 0], end[end != 0])


def test_nan_loss_stops_with_the_parameter_to_change():
  inputs = keras.Input(shape=(16,), name="x")
  logits = keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(km.NonFiniteLossError, match=r"loss became nan at step 1;"
                     r".*`learning_rate` \(now 0.001\)"):
    km.prune_to(logits, tiny_data(nan=True), target_sparsity=0.5, steps=STEPS,
                loss=loss)


def test_nan_weights_with_a_finite_loss_are_refused():
  # ReLU maps NaN inputs to a finite loss, but the gradients are NaN.
  with pytest.raises(km.NonFiniteLossError, match=r"NaN or infinite weights in "
                     r"\['d1/kernel'\].*`learning_rate` \(now 0.001\)"):
    km.prune_to(tiny_model(), tiny_data(nan=True), target_sparsity=0.5,
                steps=STEPS, loss=LOSS)


def test_continued_pruning_moves_the_target_without_retracing():
  run = km.ContinuedPruning(tiny_model(), ["d1", "d2"], loss=LOSS)
  first = run.stage(tiny_data(), 0.0, 0.5, steps=STEPS)
  assert_kernel_sparsity(first, ["d1", "d2"], 0.5)
  train_function = run.model.train_function
  second = run.stage(tiny_data(), 0.5, 0.7, steps=STEPS)
  assert second is first and run.steps_done == 2 * STEPS
  assert_kernel_sparsity(second, ["d1", "d2"], 0.7)
  assert run.model.train_function is train_function  # One trace for both.


# Layer selection and bad input.


def test_select_layers_patterns_and_errors():
  model = tiny_model()
  assert km.select_layers(model) == ["d1", "d2", "out"]
  assert km.select_layers(model, include=["d*"], exclude=["d2"]) == ["d1"]
  with pytest.raises(ValueError, match=r"`include_layers` pattern 'conv\*' "
                     r"matches no prunable layer. Prunable layers: "
                     r"\['d1', 'd2', 'out'\]"):
    km.select_layers(model, include=["conv*"])
  with pytest.raises(ValueError, match="No layer is left to prune"):
    km.select_layers(model, exclude=["*"])


def test_m_by_n_leaves_out_layers_without_whole_blocks():
  model = tiny_model(inputs_dim=6)  # d1's input dimension 6: no 4-blocks
  assert km.select_layers(model, m_by_n=(2, 4)) == ["d2", "out"]
  with pytest.raises(ValueError, match=r"\['d1'\] cannot take 2:4 blocks"):
    km.select_layers(model, include=["d1"], m_by_n=(2, 4))


def test_subclassed_and_tf_keras_models_are_refused():

  class Sub(keras.Model):

    def __init__(self):
      super().__init__()
      self.dense = keras.layers.Dense(2)

    def call(self, x):
      return self.dense(x)

  with pytest.raises(km.UnsupportedModelError, match="subclassed Keras model"):
    km.check_supported(Sub())
  import tf_keras  # pylint: disable=g-import-not-at-top
  legacy = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
  with pytest.raises(km.UnsupportedModelError, match="not a Keras 3 Model"):
    km.check_supported(legacy)


def test_resolve_loss():
  model = tiny_model()
  loss, source = km.resolve_loss(model)
  assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
  assert source == "default (sparse categorical, from_logits=False)"
  model.compile(optimizer="adam", loss="mse")
  assert km.resolve_loss(model) == ("mse", "compiled model")
  inputs = keras.Input((3,))
  two = keras.Model(inputs, [keras.layers.Dense(1)(inputs),
                             keras.layers.Dense(2)(inputs)])
  with pytest.raises(ValueError, match="2 outputs and no recorded loss"):
    km.resolve_loss(two)


# The whole job and what it writes.


def test_prune_model_result_and_saved_file(tmp_path):
  model = tiny_model()
  config = PrunerConfig(target_sparsity=0.7, train_steps=STEPS, seed=1)
  result = km.prune_model(model, tiny_data(), config, eval_ds=tiny_data(1))
  assert isinstance(result, km.PruneResult)
  assert result.structure == "unstructured" and result.target_sparsity == 0.7
  assert result.pruned_layers == ["d1", "d2", "out"]
  assert result.stats["sparsity"] == pytest.approx(0.7, abs=0.01)
  assert set(result.metrics) == set(result.baseline_metrics) == {
      "loss", "accuracy"}
  props = result.properties()
  assert props["pruned_layers"] == "d1,d2,out" and "eval_accuracy" in props
  assert props["baseline_gzip_weight_bytes"] > props["gzip_weight_bytes"]

  path = str(tmp_path / "pruned.keras")
  result.model.save(path)
  loaded = keras.saving.load_model(path)
  assert [w.path for w in loaded.weights] == [w.path for w in model.weights]
  assert_same_weights(loaded.get_weights(), result.model.get_weights())
  assert km.pruning_stats(loaded, result.pruned_layers)["sparsity"] == (
      result.stats["sparsity"])
  x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
  np.testing.assert_allclose(loaded.predict(x, verbose=0),
                             result.model.predict(x, verbose=0), atol=1e-6)


def test_prune_model_m_by_n_config():
  config = PrunerConfig(sparsity_structure="2:4", train_steps=STEPS,
                        include_layers="d*")
  result = km.prune_model(tiny_model(), tiny_data(), config)
  assert result.target_sparsity == 0.5 and result.pruned_layers == ["d1", "d2"]
  assert result.metrics == {} and result.stats["sparsity"] == 0.5


# Through the backend-independent entry points (pruning.prune_model, the search).


def test_search_drives_continued_pruning_on_a_keras3_model():
  from tfx_compression.components.pruner import search  # pylint: disable=g-import-not-at-top
  config = PrunerConfig(search_sparsities="0.3,0.5", search_steps=20,
                        max_drop=0.99, seed=2)
  result = search.search_sparsity(tiny_model(), tiny_data(), tiny_data(1),
                                  config, config.gate(), loss=LOSS)
  assert [s.sparsity for s in result.steps] == [0.3, 0.5]
  assert result.chosen.sparsity == 0.5
  assert isinstance(result.model, keras.Model)
  assert result.prune_result.stats["sparsity"] == pytest.approx(0.5, abs=0.01)
  # The steps continued one run: the second's zeros include the first's ramp.
  assert result.steps[1].nonzero_params < result.steps[0].nonzero_params


def test_log_dir_gets_training_and_mask_summaries(tmp_path):
  km.prune_to(tiny_model(), tiny_data(), target_sparsity=0.5, steps=STEPS,
              loss=LOSS, log_dir=str(tmp_path))
  events = [p for p in tmp_path.rglob("events.out.tfevents.*")]
  assert {p.parent.name for p in events} >= {"train", "metrics"}
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(tmp_path / "metrics"),
                                           size_guidance={"tensors": 0})
  acc.Reload()
  assert "d1/kernel/sparsity" in acc.Tags()["tensors"]
  last = acc.Tensors("d1/kernel/sparsity")[-1]
  assert tf.make_ndarray(last.tensor_proto) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("kwargs", [
    dict(target_sparsity=0.7, begin_step=3, end_step=25, frequency=4),
    dict(target_sparsity=0.6, schedule="constant", frequency=5),
    dict(target_sparsity=0.0, m_by_n=(2, 4)),
])
def test_same_zeros_and_weights_as_the_tfmot_backend(kwargs):
  """The tf_keras model pruned by tfmot and the same Keras 3 model pruned here."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import keras2_magnitude  # pylint: disable=g-import-not-at-top
  ours = tiny_model()
  # tf.data's shuffle reads the global seed when a dataset is made: the same.
  data_a, data_b = tiny_data(), tiny_data()
  tf_keras.utils.set_random_seed(0)
  inputs = tf_keras.Input(shape=(16,), name="x")
  h = tf_keras.layers.Dense(32, activation="relu", name="d1")(inputs)
  h = tf_keras.layers.Dense(8, activation="relu", name="d2")(h)
  theirs = tf_keras.Model(
      inputs, tf_keras.layers.Dense(4, activation="softmax", name="out")(h))
  theirs.set_weights(ours.get_weights())
  common = dict(steps=STEPS, layers=["d1", "d2"], seed=5, **kwargs)
  a = keras2_magnitude.prune_to(
      theirs, data_a, loss=tf_keras.losses.SparseCategoricalCrossentropy(),
      **common)
  b = km.prune_to(ours, data_b, loss=LOSS, **common)
  assert len(a.get_weights()) == len(b.get_weights())
  for x, y in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(x == 0, y == 0)
    np.testing.assert_allclose(x, y, atol=1e-5)
  assert (b.get_layer("d1").get_weights()[0] == 0).mean() > 0.45
