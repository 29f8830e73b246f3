"""Unit tests of the Pruner's config and pure pruning functions, on tiny models."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import keras2_magnitude
from tfx_compression.components.pruner import keras2_training
from tfx_compression.components.pruner import m_by_n
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner.config import PrunerConfig
from tests import fixtures

STEPS = 40


tiny_model = fixtures.tiny_model
tiny_data = fixtures.tiny_data


LOSS = keras.losses.SparseCategoricalCrossentropy()


def assert_kernel_sparsity(model, names, target, tol=0.01):
  """Each named layer's kernel has target +- tol zeros."""
  for name in names:
    kernel = model.get_layer(name).kernel.numpy()
    achieved = float((kernel == 0).mean())
    assert abs(achieved - target) <= tol, (name, achieved, target)


# Config.


class TestConfig:

  @pytest.mark.parametrize("kwargs,names", [
      (dict(target_sparsity=1.0), ["target_sparsity", "1.0", "[0, 1)"]),
      (dict(target_sparsity=-0.1), ["target_sparsity", "-0.1"]),
      (dict(initial_sparsity=0.9, target_sparsity=0.5), ["initial_sparsity"]),
      (dict(schedule="cosine"), ["schedule", "cosine"]),
      (dict(sparsity_structure="blocks"), ["sparsity_structure", "blocks"]),
      (dict(sparsity_structure="4:4"), ["sparsity_structure", "4:4"]),
      (dict(begin_step=50, end_step=50), ["end_step", "50", "begin_step"]),
      (dict(end_step=100, frequency=30), ["end_step", "frequency", "90 or 120"]),
      (dict(end_step=300, train_steps=300), ["end_step", "300"]),
      (dict(train_steps=100, epochs=2), ["train_steps", "epochs"]),
      (dict(frequency=0), ["frequency", "0"]),
      (dict(batch_size=0), ["batch_size"]),
      (dict(learning_rate=0.0), ["learning_rate"]),
      (dict(channel_ranking="random"), ["channel_ranking", "random"]),
      (dict(include_layers="d*", exclude_layers="d*"), ["include_layers"]),
  ])
  def test_bad_values_name_parameter_and_value(self, kwargs, names):
    with pytest.raises(ValueError) as e:
      PrunerConfig(**kwargs)
    for name in names:
      assert name in str(e.value)

  @pytest.mark.parametrize("kwargs,name", [
      (dict(target_sparsity="0.8"), "target_sparsity"),
      (dict(train_steps=10.5), "train_steps"),
      (dict(seed=True), "seed"),
      (dict(include_layers=3), "include_layers"),
  ])
  def test_bad_types(self, kwargs, name):
    with pytest.raises(TypeError, match=name):
      PrunerConfig(**kwargs)

  def test_normalizes(self):
    c = PrunerConfig(sparsity_structure=" 2 : 4 ", schedule="Constant",
                     include_layers=["conv*", " dense1 "], exclude_layers="a,,b")
    assert c.sparsity_structure == "2:4" and c.m_by_n == (2, 4)
    assert c.effective_target_sparsity == 0.5
    assert c.schedule == "constant"
    assert c.include_layers == ("conv*", "dense1")
    assert c.exclude_layers == ("a", "b")

  def test_auto_schedule(self):
    assert config_lib.resolve_schedule(300) == (0, 210, 10)
    begin, end, freq = config_lib.resolve_schedule(37, begin_step=5)
    assert begin == 5 and end < 37 and (end - begin) % freq == 0
    # Given end_step: a frequency that lands exactly on it.
    _, end, freq = config_lib.resolve_schedule(300, end_step=150)
    assert end == 150 and 150 % freq == 0 and 150 // freq >= 20
    assert config_lib.resolve_schedule(2) == (0, 1, 1)

  def test_too_few_steps(self):
    with pytest.raises(ValueError, match="train_steps"):
      config_lib.resolve_schedule(1)
    with pytest.raises(ValueError, match="frequency"):
      PrunerConfig(train_steps=10, frequency=20)

  def test_epochs_need_example_count(self):
    c = PrunerConfig(epochs=2, batch_size=10)
    assert c.total_steps(95) == 20
    assert c.steps_per_epoch(95) == 10
    with pytest.raises(ValueError, match="epochs"):
      c.total_steps()

  def test_from_parameters_skips_none_and_unknown(self):
    c = PrunerConfig.from_parameters(
        {"target_sparsity": 0.5, "end_step": None, "max_latency_ratio": 2.0})
    assert c.target_sparsity == 0.5 and c.end_step is None

  def test_data_inputs(self):
    with pytest.raises(ValueError, match="label_key"):
      PrunerConfig().check_data_inputs(True, False)
    with pytest.raises(ValueError, match="schema"):
      PrunerConfig(label_key="y").check_data_inputs(False, False)
    PrunerConfig(module_file="m.py").check_data_inputs(False, False)


# Layer selection.


class TestSelectLayers:

  def test_default_is_every_prunable_layer(self):
    assert keras2_magnitude.select_layers(tiny_model()) == ["d1", "d2", "out"]

  def test_include_exclude(self):
    m = tiny_model()
    assert keras2_magnitude.select_layers(m, include=["d*"]) == ["d1", "d2"]
    assert keras2_magnitude.select_layers(m, exclude=["out"]) == ["d1", "d2"]

  def test_pattern_matching_nothing_names_it_and_lists_layers(self):
    with pytest.raises(ValueError) as e:
      keras2_magnitude.select_layers(tiny_model(), include=["conv*"])
    msg = str(e.value)
    assert "include_layers" in msg and "'conv*'" in msg
    assert "['d1', 'd2', 'out']" in msg

  def test_exclude_everything(self):
    with pytest.raises(ValueError, match="No layer is left"):
      keras2_magnitude.select_layers(tiny_model(), exclude=["*"])

  def test_m_by_n_skips_layers_without_full_blocks(self):
    inputs = keras.Input(shape=(6,))
    h = keras.layers.Dense(8, name="odd_in")(inputs)   # input dim 6
    out = keras.layers.Dense(4, name="even_in")(h)     # input dim 8
    m = keras.Model(inputs, out)
    assert keras2_magnitude.select_layers(m, m_by_n=(2, 4)) == ["even_in"]
    with pytest.raises(ValueError, match="odd_in.*multiple of 4"):
      keras2_magnitude.select_layers(m, include=["odd_in"], m_by_n=(2, 4))

  def test_subclassed_model_is_refused_with_its_layers(self):

    class Sub(keras.Model):

      def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(4, name="hidden")

      def call(self, x):
        return self.hidden(x)

    m = Sub()
    m(tf.zeros([1, 3]))
    with pytest.raises(pruning.UnsupportedModelError) as e:
      keras2_magnitude.prune_to(m, tiny_data(), target_sparsity=0.5, steps=4, loss=LOSS)
    msg = str(e.value)
    assert "subclassed" in msg and "hidden (Dense)" in msg
    assert "functional" in msg


# Pruning.


def test_unstructured_reaches_target_and_leaves_input_alone():
  model = tiny_model()
  before = [w.copy() for w in model.get_weights()]
  pruned = keras2_magnitude.prune_to(model, tiny_data(), target_sparsity=0.75,
                                     steps=STEPS, loss=LOSS, layers=["d1", "d2"])
  assert_kernel_sparsity(pruned, ["d1", "d2"], 0.75)
  # Not selected: untouched by the mask.
  assert (pruned.get_layer("out").kernel.numpy() != 0).all()
  # The caller's model: same weights, no wrapper.
  fixtures.assert_same_weights(before, model.get_weights())
  assert not keras2_magnitude.is_wrapped(model) and not keras2_magnitude.is_wrapped(pruned)
  assert [l.name for l in pruned.layers] == [l.name for l in model.layers]


def test_constant_schedule_reaches_target():
  pruned = keras2_magnitude.prune_to(tiny_model(), tiny_data(), target_sparsity=0.5,
                                     steps=STEPS, loss=LOSS, schedule="constant")
  assert_kernel_sparsity(pruned, ["d1", "d2", "out"], 0.5)


def test_m_by_n_blocks():
  pruned = keras2_magnitude.prune_to(tiny_model(), tiny_data(), target_sparsity=0.0,
                                     steps=STEPS, loss=LOSS, m_by_n=(2, 4))
  for name in ("d1", "d2", "out"):
    kernel = pruned.get_layer(name).kernel.numpy()
    assert m_by_n.m_by_n_violations(kernel, (2, 4)) == 0, name
    assert (kernel == 0).mean() == pytest.approx(0.5)


def test_m_by_n_check_can_fail():
  dense = np.ones((8, 3), np.float32)
  assert m_by_n.m_by_n_violations(dense, (2, 4)) == 6  # 3 outputs x 2 blocks
  conv = np.ones((3, 3, 8, 2), np.float32)
  conv[:, :, 0:2, :] = 0     # first block of the input dim: 2 zeros each
  assert m_by_n.m_by_n_violations(conv, (2, 4)) == 9 * 2  # the second block


def test_same_seed_same_weights_and_masks():
  runs = [keras2_magnitude.prune_to(tiny_model(), tiny_data(), target_sparsity=0.6,
                                    steps=STEPS, loss=LOSS, seed=3) for _ in range(2)]
  fixtures.assert_same_weights(runs[0].get_weights(), runs[1].get_weights())
  # Not vacuous: the runs trained (the surviving weights moved).
  start = tiny_model().get_layer("d1").kernel.numpy()
  end = runs[0].get_layer("d1").kernel.numpy()
  assert not np.allclose(start[end != 0], end[end != 0])


def test_continues_from_current_weights_to_higher_sparsity():
  """The search contract: stage 2 keeps stage 1's zeros and adds more."""
  half = keras2_magnitude.prune_to(tiny_model(), tiny_data(), target_sparsity=0.5,
                                   steps=STEPS, loss=LOSS)
  more = keras2_magnitude.prune_to(half, tiny_data(), initial_sparsity=0.5,
                                   target_sparsity=0.75, steps=STEPS, loss=LOSS)
  assert_kernel_sparsity(more, ["d1", "d2", "out"], 0.75)
  for name in ("d1", "d2"):
    zeros_1 = half.get_layer(name).kernel.numpy() == 0
    zeros_2 = more.get_layer(name).kernel.numpy() == 0
    assert zeros_2[zeros_1].all(), name


def test_nan_loss_raises():
  with pytest.raises(pruning.NonFiniteLossError, match="learning_rate"):
    keras2_magnitude.prune_to(tiny_model(), tiny_data(nan=True), target_sparsity=0.5,
                              steps=STEPS, loss=LOSS)


def test_resolve_loss_from_output_activation():
  loss, _ = keras2_training.resolve_loss(tiny_model())
  assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
  assert not loss.get_config()["from_logits"]
  inputs = keras.Input(shape=(3,))
  logits = keras.Model(inputs, keras.layers.Dense(5)(inputs))
  loss, _ = keras2_training.resolve_loss(logits)
  assert loss.get_config()["from_logits"]
  binary = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(
      inputs))
  loss, _ = keras2_training.resolve_loss(binary)
  assert isinstance(loss, keras.losses.BinaryCrossentropy)


def test_resolve_loss_prefers_compiled():
  m = tiny_model()
  m.compile(optimizer="adam", loss="mse")
  assert keras2_training.resolve_loss(m) == ("mse", "compiled model")


def test_prune_model_measures(tmp_path):
  # 3 epochs of 256 examples in batches of 32: 24 steps.
  config = PrunerConfig(target_sparsity=0.7, epochs=3, batch_size=32,
                        exclude_layers="out")
  model = tiny_model()
  result = pruning.prune_model(model, tiny_data(), config,
                               eval_ds=tiny_data(seed=5), log_dir=str(tmp_path),
                               train_examples=256)
  assert result.pruned_layers == ["d1", "d2"]
  assert abs(result.stats["sparsity"] - 0.7) <= 0.01
  kernel_size = 16 * 32 + 32 * 8
  assert result.stats["pruned_param_count"] == kernel_size
  assert result.stats["param_count"] == model.count_params()
  assert result.stats["zero_count"] >= result.stats["pruned_zero_count"]
  assert (result.stats["gzip_weight_bytes"]
          < result.stats["baseline_gzip_weight_bytes"])
  assert set(result.metrics) == {"loss", "accuracy"}
  assert set(result.baseline_metrics) == {"loss", "accuracy"}
  props = result.properties()
  assert props["target_sparsity"] == 0.7 and props["pruned_layers"] == "d1,d2"
  assert "eval_accuracy" in props and "baseline_eval_accuracy" in props
  # TensorBoard: tfmot's pruning summaries and the eval scalars.
  events = [p for p in tmp_path.rglob("events.out.tfevents.*")]
  assert {p.parent.name for p in events} >= {"metrics", "eval"}


def test_prune_to_without_copy_trains_the_model_itself_to_the_same_weights():
  """copy=False (the Pruner's own clone): same result, one copy less."""
  copied = keras2_magnitude.prune_to(tiny_model(), tiny_data(), target_sparsity=0.6,
                                     steps=STEPS, loss=LOSS, seed=2)
  own = tiny_model()
  in_place = keras2_magnitude.prune_to(own, tiny_data(), target_sparsity=0.6,
                                       steps=STEPS, loss=LOSS, seed=2, copy=False)
  fixtures.assert_same_weights(copied.get_weights(), in_place.get_weights())
  # The model passed was trained (its kernels hold the zeros), not copied.
  assert (own.get_layer("d1").kernel.numpy() == 0).mean() == pytest.approx(0.6, abs=0.01)


def test_prune_model_leaves_the_callers_model_alone():
  model = tiny_model()
  before = [w.copy() for w in model.get_weights()]
  result = pruning.prune_model(model, tiny_data(),
                               PrunerConfig(target_sparsity=0.7, train_steps=STEPS))
  assert result.stats["sparsity"] == pytest.approx(0.7, abs=0.01)
  fixtures.assert_same_weights(before, model.get_weights())


def test_nan_loss_raises_on_the_loss():
  inputs = keras.Input(shape=(16,), name="x")
  logits = keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))
  loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  with pytest.raises(pruning.NonFiniteLossError, match="loss became nan"):
    keras2_magnitude.prune_to(logits, tiny_data(nan=True), target_sparsity=0.5,
                              steps=STEPS, loss=loss)


# A Keras 3 model goes to the Keras 3 backend, and tfmot is never imported.


_KERAS3_SCRIPT = """
import os, sys
import keras, numpy as np, tensorflow as tf
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner.config import PrunerConfig
from tests import fixtures
keras.utils.set_random_seed(0)
inp = keras.Input((16,), name="x")
h = keras.layers.Dense(32, activation="relu", name="d1")(inp)
m = keras.Model(inp, keras.layers.Dense(4, activation="softmax", name="out")(h))
rng = np.random.default_rng(0)
x = rng.normal(size=(128, 16)).astype("float32")
ds = tf.data.Dataset.from_tensor_slices((x, x[:, :4].argmax(1))).batch(32)
for structure in ("unstructured", "2:4", "channels"):
  r = pruning.prune_model(m, ds, PrunerConfig(
      target_sparsity=0.5, train_steps=20, finetune_steps=5,
      exclude_layers="out", sparsity_structure=structure), eval_ds=ds)
  print("RESULT", structure, type(r.model).__module__.split(".")[0],
        round(r.stats["sparsity"], 2), ",".join(r.pruned_layers),
        ",".join(sorted(r.metrics)))
print("RESULT tfmot", any(k.startswith("tensorflow_model_optimization")
                          for k in sys.modules),
      os.environ.get("TF_USE_LEGACY_KERAS"))
"""


def test_keras3_model_is_pruned_by_the_keras3_backend_without_tfmot():
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  done = subprocess.run([sys.executable, "-c", _KERAS3_SCRIPT],
                        capture_output=True, text=True, env=env, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  lines = [l.split()[1:] for l in done.stdout.splitlines()
           if l.startswith("RESULT")]
  assert lines == [
      ["unstructured", "keras", "0.5", "d1", "accuracy,loss"],
      ["2:4", "keras", "0.5", "d1", "accuracy,loss"],
      ["channels", "keras", "0.5", "d1", "accuracy,loss"],
      ["tfmot", "False", "None"],
  ]
