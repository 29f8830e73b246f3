"""Distillation in the Pruner's fine-tuning (common/distillation.py, #20), on tiny models.

Weight 0 is today's fine-tuning bit for bit; a positive weight changes the
training (the loss has a KL term towards the frozen input model) and still
reaches the target sparsity, on tf_keras (tfmot) and Keras 3.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import keras

from tests.fixtures import assert_same_weights
from tests.fixtures import tiny_data
from tests.fixtures import tiny_model
from tfx_compression.components.common import distillation
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner import search
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner.config import PrunerConfig

STEPS = 30


def _config(**kw):
  kw.setdefault("target_sparsity", 0.8)
  return PrunerConfig(train_steps=STEPS, **kw)


# The config.


@pytest.mark.parametrize("name, value, allowed", [
    ("distillation_weight", -0.1, "outside [0, 1]"),
    ("distillation_weight", 1.5, "outside [0, 1]"),
    ("distillation_temperature", 0.0, "outside (0, 100]"),
    ("distillation_temperature", 500.0, "outside (0, 100]"),
])
def test_config_rejects_out_of_range(name, value, allowed):
  with pytest.raises(ValueError,
                     match=re.escape(f"`{name}`={value!r} is {allowed}")):
    _config(**{name: value})


def test_config_rejects_a_string_weight():
  with pytest.raises(TypeError, match=r"`distillation_weight` must be a number"):
    _config(distillation_weight="0.5")


def test_config_takes_distillation_in_the_search():
  config = _config(distillation_weight=0.5, search_sparsities="0.5,0.7",
                   max_drop=0.01)
  assert config.is_search and config.distills


def test_config_defaults_are_off():
  config = _config()
  assert config.distillation_weight == 0.0
  assert not config.distills
  assert _config(distillation_weight=0.3).distills


# The loss.


def test_kl_is_zero_for_equal_outputs_and_positive_otherwise():
  logits = tf.constant([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
  same = distillation.kl_divergence(logits, logits, logits=True, temperature=2.0)
  other = distillation.kl_divergence(logits, logits[::-1], logits=True,
                                     temperature=2.0)
  assert abs(float(same)) < 1e-6
  assert float(other) > 0.01


def test_kl_of_probabilities_equals_kl_of_their_logits():
  teacher = tf.constant([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
  student = tf.constant([[0.0, 1.0, 1.0], [2.0, -1.0, 0.0]])
  for temperature in (1.0, 3.0):
    from_logits = distillation.kl_divergence(teacher, student, logits=True,
                                             temperature=temperature)
    from_probs = distillation.kl_divergence(
        tf.nn.softmax(teacher), tf.nn.softmax(student), logits=False,
        temperature=temperature)
    np.testing.assert_allclose(float(from_probs), float(from_logits), rtol=1e-4)


def test_kl_of_probabilities_is_exact_far_in_the_tail():
  # A trained classifier puts most classes below 1e-7 (65% of the demo CNN's
  # outputs): their log-probabilities must not be clipped there.
  teacher = tf.constant([[0.0, 25.0, 50.0]])
  student = tf.constant([[10.0, 0.0, 45.0]])
  from_logits = distillation.kl_divergence(teacher, student, logits=True,
                                           temperature=4.0)
  probs = tf.Variable(tf.nn.softmax(student))
  with tf.GradientTape() as tape:
    from_probs = distillation.kl_divergence(tf.nn.softmax(teacher), probs,
                                            logits=False, temperature=4.0)
  np.testing.assert_allclose(float(from_probs), float(from_logits), rtol=1e-4)
  # The student's class at e^-45 still gets a gradient.
  assert float(tf.abs(tape.gradient(from_probs, probs)[0, 1])) > 0


def test_kl_of_one_sigmoid_unit_is_the_binary_kl():
  t, s = tf.constant([[0.8]]), tf.constant([[0.3]])
  got = distillation.kl_divergence(t, s, logits=False, temperature=1.0)
  want = 0.8 * np.log(0.8 / 0.3) + 0.2 * np.log(0.2 / 0.7)
  np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_loss_mixes_task_and_kl_and_leaves_evaluation_batches_alone():
  task = keras.losses.SparseCategoricalCrossentropy()
  spec = tf.TensorSpec([None], tf.int64)
  labels = tf.constant([0, 2], tf.int64)
  student = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
  teacher = tf.constant([[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
  loss = distillation.distillation_loss(task, from_logits=False, weight=0.25,
                                        temperature=2.0, label_spec=spec)
  packed = distillation._pack(labels, teacher, 1)  # pylint: disable=protected-access
  kl = distillation.kl_divergence(teacher, student, logits=False,
                                  temperature=2.0)
  want = 0.75 * float(task(labels, student)) + 0.25 * 4.0 * float(kl)
  np.testing.assert_allclose(float(loss(packed, student)), want, rtol=1e-5)
  np.testing.assert_allclose(float(loss(labels, student)),
                             float(task(labels, student)), rtol=1e-6)


def test_from_logits_follows_the_loss_then_the_output():
  assert distillation.from_logits(
      keras.losses.SparseCategoricalCrossentropy(from_logits=True), "softmax")
  assert not distillation.from_logits(
      keras.losses.SparseCategoricalCrossentropy(), None)
  assert not distillation.from_logits("sparse_categorical_crossentropy",
                                      "softmax")
  assert distillation.from_logits("sparse_categorical_crossentropy", "linear")


# Pruning with it: tf_keras (tfmot) and Keras 3.


def _prune(model, **kw):
  return pruning.prune_model(model, tiny_data(), _config(**kw),
                             eval_ds=tiny_data(seed=5))


@pytest.mark.parametrize("keras_module", ["tf_keras", "keras3"])
def test_weight_zero_is_todays_fine_tuning_bit_for_bit(keras_module,
                                                      monkeypatch):
  module = keras if keras_module == "keras3" else None
  make = (lambda: tiny_model(keras_module=module)) if module else tiny_model
  plain = _prune(make())

  def no_teacher(*args, **kwargs):
    raise AssertionError("weight 0 built a teacher")
  # Off means off: no teacher copy, no extra forward pass per batch.
  monkeypatch.setattr(distillation, "for_model", no_teacher)
  zero = _prune(make(), distillation_weight=0.0, distillation_temperature=4.0)
  assert_same_weights(plain.model.get_weights(), zero.model.get_weights())
  assert plain.metrics == zero.metrics


@pytest.mark.parametrize("keras_module", ["tf_keras", "keras3"])
def test_positive_weight_changes_training_and_reaches_the_sparsity(keras_module):
  module = keras if keras_module == "keras3" else None
  make = (lambda: tiny_model(keras_module=module)) if module else tiny_model
  model = make()
  before = model.get_weights()
  plain = _prune(model)
  distilled = _prune(model, distillation_weight=0.7)
  different = [not np.array_equal(a, b) for a, b in
               zip(plain.model.get_weights(), distilled.model.get_weights())]
  assert any(different)
  assert abs(distilled.stats["sparsity"] - 0.8) <= 0.01
  assert np.isfinite(distilled.metrics["loss"])
  # The teacher was a copy: the input model is untouched, and the result keeps
  # its own loss (not the distillation closure) for saving.
  assert_same_weights(before, model.get_weights())
  assert getattr(distilled.model.loss, "__name__", "") != "distillation_loss"


@pytest.mark.parametrize("keras_module", ["tf_keras", "keras3"])
def test_channels_with_distillation(keras_module):
  model = (tiny_model(keras_module=keras) if keras_module == "keras3"
           else tiny_model())
  result = pruning.prune_model(
      model, tiny_data(),
      PrunerConfig(sparsity_structure="channels", target_sparsity=0.5,
                   train_steps=20, finetune_steps=10, exclude_layers="out",
                   distillation_weight=0.5),
      eval_ds=tiny_data(seed=5))
  assert result.model.get_layer("d1").units < 32
  assert np.isfinite(result.metrics["loss"])


# The search: every step distils from the input model.


def _search(model, stage_fn=None, train_ds=None, loss=None, **kw):
  kw.setdefault("search_sparsities", "0.3,0.5")
  config = PrunerConfig(search_steps=10, max_drop=0.99, **kw)
  if loss is None:
    loss, _ = strategy_lib.backend(model).resolve_loss(model)
  return search.search_sparsity(model, train_ds or tiny_data(),
                                tiny_data(seed=5), config, config.gate(),
                                loss=loss, stage_fn=stage_fn)


def test_search_with_weight_zero_is_todays_search(monkeypatch):
  model = tiny_model()
  loss, _ = strategy_lib.backend(model).resolve_loss(model)
  train_ds = tiny_data()
  given = []

  def spy(current, train, config, sparsity, state, **kw):
    given.append((train, kw["loss"]))
    return search._stage(current, train, config, sparsity, state, **kw)  # pylint: disable=protected-access

  def no_teacher(*args, **kwargs):
    raise AssertionError("weight 0 built a teacher")
  monkeypatch.setattr(distillation, "for_model", no_teacher)
  result = _search(model, spy, train_ds=train_ds, loss=loss,
                   distillation_weight=0.0, distillation_temperature=4.0)
  # Every step trains on the very loss and batches of today's search.
  assert len(given) == 2
  assert all(t is train_ds and l is loss for t, l in given)
  assert result.chosen.sparsity == 0.5


@pytest.mark.parametrize("keras_module, structure", [
    ("tf_keras", "unstructured"), ("keras3", "unstructured"),
    ("tf_keras", "channels")])
def test_search_distils_every_step_from_the_input_model(keras_module,
                                                        structure):
  model = (tiny_model(keras_module=keras) if keras_module == "keras3"
           else tiny_model())
  before = model.get_weights()
  seen = []

  def spy(current, train_ds, config, sparsity, state, *, loss, **kw):
    features, packed = next(iter(train_ds))
    seen.append(dict(distills=getattr(loss, "distills", False),
                     teacher=packed.numpy()[:, 1:],
                     input_model=model(features, training=False).numpy(),
                     current=current(features, training=False).numpy()))
    return search._stage(current, train_ds, config, sparsity, state,  # pylint: disable=protected-access
                         loss=loss, **kw)

  kw = dict(sparsity_structure=structure, distillation_weight=0.7)
  if structure == "channels":
    kw.update(search_sparsities="0.25,0.5", finetune_steps=5,
              exclude_layers="out")
  result = _search(model, spy, **kw)
  assert len(seen) == 2 and all(s["distills"] for s in seen)
  for s in seen:  # Labels carry the frozen input model's outputs...
    np.testing.assert_allclose(s["teacher"], s["input_model"], atol=1e-6)
  # ... not the previous step's (the second step starts from a pruned model).
  assert not np.allclose(seen[1]["teacher"], seen[1]["current"], atol=1e-3)
  assert_same_weights(before, model.get_weights())
  assert getattr(result.model.loss, "__name__", "") != "distillation_loss"


# The component.


def test_pruner_component_passes_the_parameters_on():
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner.component import Pruner  # pylint: disable=g-import-not-at-top
  channel = lambda t: tfx.dsl.Channel(type=t)
  pruner = Pruner(model=channel(standard_artifacts.Model),
                  examples=channel(standard_artifacts.Examples),
                  schema=channel(standard_artifacts.Schema), label_key="label",
                  distillation_weight=1, distillation_temperature=3)
  props = pruner.exec_properties
  assert props["distillation_weight"] == 1.0
  assert props["distillation_temperature"] == 3.0
  assert PrunerConfig.from_parameters(props).distills
  with pytest.raises(ValueError, match=r"`distillation_weight`=2.0 is outside"):
    Pruner(model=channel(standard_artifacts.Model),
           examples=channel(standard_artifacts.Examples),
           schema=channel(standard_artifacts.Schema), label_key="label",
           distillation_weight=2)
