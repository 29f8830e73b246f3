"""Unit tests of Keras 3 channel pruning (keras3_channels) on tiny seeded models.

The central check: the rebuilt narrow model computes what the wide model with
the removed channels zeroed computes, on the demo CNN and on a residual /
BatchNorm / Concatenate / Depthwise / Separable model.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tfx_compression.components.pruner import keras3_channels as kc
from tfx_compression.components.pruner.channel_graph import ChannelPruningError
from tests.assertions import assert_same_weights

FEATURES = [f"pixel_{i:02d}" for i in range(64)]


def demo_cnn(k=keras, seed: int = 0):
  """pipelines/trainers/digits_trainer.build_model's architecture, for Keras ``k``."""
  k.utils.set_random_seed(seed)
  inputs = {f: k.Input(shape=(1,), name=f, dtype="float32") for f in FEATURES}
  x = k.layers.Concatenate(name="pixels")(list(inputs.values()))
  x = k.layers.Rescaling(1.0 / 16.0, name="scale")(x)
  x = k.layers.Reshape((8, 8, 1), name="image")(x)
  x = k.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
  x = k.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
  x = k.layers.MaxPooling2D(2, name="pool")(x)
  x = k.layers.Flatten(name="flatten")(x)
  x = k.layers.Dense(256, activation="relu", name="dense1")(x)
  out = k.layers.Dense(10, activation="softmax", name="probabilities")(x)
  return k.Model(inputs=inputs, outputs=out, name="digits_cnn")


def residual_model(seed: int = 0):
  """Conv-BN-ReLU twice joined by Add, a Concatenate, Depthwise, Separable, Dense."""
  keras.utils.set_random_seed(seed)
  L = keras.layers
  inputs = keras.Input(shape=(8, 8, 3), name="image")
  a = L.Conv2D(8, 3, padding="same", name="a")(inputs)
  a = L.ReLU(name="a_relu")(L.BatchNormalization(name="a_bn")(a))
  b = L.Conv2D(8, 3, padding="same", name="b")(a)
  b = L.BatchNormalization(name="b_bn")(b)
  x = L.ReLU(name="res_relu")(L.Add(name="res")([a, b]))
  c = L.Conv2D(4, 1, activation="relu", name="c")(x)
  x = L.Concatenate(name="cat")([x, c])
  x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
  x = L.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(x)
  x = L.GlobalAveragePooling2D(name="gap")(x)
  x = L.Dense(16, activation="relu", name="d1")(x)
  out = L.Dense(3, name="logits")(x)
  model = keras.Model(inputs, out, name="residual")
  rng = np.random.default_rng(seed)
  for name in ("a_bn", "b_bn"):  # Non-trivial statistics: the rebuild must slice them.
    layer = model.get_layer(name)
    gamma, beta, mean, var = layer.get_weights()
    layer.set_weights([rng.normal(1, 0.2, gamma.shape), rng.normal(0, 0.2, beta.shape),
                       rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2, var.shape)])
  return model


def squeeze_excite(gate_filters=8, seed=0):
  """An SE block (sigmoid gate), then an SE block gated by MobileNetV3's
  hard-sigmoid written with Keras operations (relu6(x + 3) * (1 / 6)).

  ``gate_filters=1``: the first gate has one value per position, not per channel.
  """
  keras.utils.set_random_seed(seed)
  L = keras.layers
  inputs = keras.Input(shape=(6, 6, 3), name="image")
  y = L.Conv2D(8, 3, padding="same", name="c1")(inputs)
  y = L.Activation("swish", name="act1")(L.BatchNormalization(name="bn1")(y))
  s = L.Reshape((1, 1, 8), name="se_reshape")(L.GlobalAveragePooling2D()(y))
  s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
  if gate_filters == 1:
    s = L.Conv2D(1, 1, activation="sigmoid", name="se_expand")(y)
  else:
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
  y = L.Multiply(name="se_excite")([y, s])
  y = L.Conv2D(6, 3, padding="same", activation="hard_swish", name="c2")(y)
  g = L.GlobalAveragePooling2D(keepdims=True, name="pool2")(y)
  g = L.Conv2D(6, 1, name="gate2")(L.Conv2D(3, 1, activation="relu",
                                            name="reduce2")(g))
  g = L.ReLU(6.0)(g + 3.0) * (1.0 / 6.0)
  y = L.Multiply(name="excite2")([y, g])
  y = L.GlobalAveragePooling2D(name="gap")(y)
  return keras.Model(inputs, L.Dense(3, name="logits")(y), name="se")


def _demo_inputs(n=16, seed=0):
  x = np.random.default_rng(seed).integers(0, 17, size=(n, 64)).astype(np.float32)
  return {f: x[:, i:i + 1] for i, f in enumerate(FEATURES)}


def assert_exact_rebuild(model, inputs, sparsity, ranking="per_layer"):
  graph = kc.analyze(model)
  kept = kc.select_channels(model, graph, sparsity, ranking=ranking)
  wide = kc.rebuild_narrow(graph, {})
  kc.zero_channels(wide, graph, kept)
  narrow = kc.rebuild_narrow(graph, kept)
  expected = keras.ops.convert_to_numpy(wide(inputs, training=False))
  got = keras.ops.convert_to_numpy(narrow(inputs, training=False))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  # Not vacuous: channels were removed, and removing them changed the output.
  assert narrow.count_params() < model.count_params()
  original = keras.ops.convert_to_numpy(model(inputs, training=False))
  assert not np.allclose(original, expected, atol=1e-4)
  return graph, kept, narrow


def test_demo_cnn_exact_rebuild():
  model = demo_cnn()
  graph, kept, narrow = assert_exact_rebuild(model, _demo_inputs(), 0.75)
  assert graph.prunable_layers() == ["conv1", "conv2", "dense1"]
  assert "probabilities" in graph.skipped
  assert {n: len(v) for n, v in kept.items()} == {
      "conv1": 8, "conv2": 16, "dense1": 64}
  assert narrow.get_layer("dense1").kernel.shape == (4 * 4 * 16, 64)
  assert set(narrow.input) == set(FEATURES)  # Named inputs kept.


def test_residual_batchnorm_concatenate_exact_rebuild():
  model = residual_model()
  x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype(np.float32)
  graph, kept, narrow = assert_exact_rebuild(model, x, 0.5)
  # The Add ties a and b: one component, the same channels kept.
  assert ["a", "b"] in graph.components
  np.testing.assert_array_equal(kept["a"], kept["b"])
  assert graph.prunable_layers() == ["a", "b", "c", "sep", "d1"]
  assert narrow.get_layer("dw").kernel.shape == (3, 3, 4 + 2, 2)
  assert narrow.get_layer("a_bn").gamma.shape == (4,)


def test_squeeze_excite_exact_rebuild_through_the_gates():
  model = squeeze_excite()
  x = np.random.default_rng(1).normal(size=(4, 6, 6, 3)).astype(np.float32)
  graph, kept, narrow = assert_exact_rebuild(model, x, 0.5)
  assert graph.prunable_layers() == ["c1", "se_reduce", "se_expand", "c2",
                                     "reduce2", "gate2"]
  assert ["c1", "se_expand"] in graph.components
  assert ["c2", "gate2"] in graph.components
  assert set(graph.skipped) == {"logits"} and not graph.partial
  np.testing.assert_array_equal(kept["c2"], kept["gate2"])
  assert narrow.get_layer("se_expand").kernel.shape == (1, 1, 2, 4)
  assert narrow.get_layer("gate2").bias.shape == (3,)


def test_gate_that_is_not_per_channel_blocks():
  graph = kc.analyze(squeeze_excite(gate_filters=1))
  assert "c1" in graph.skipped and "se_expand" in graph.skipped
  assert ("Multiply layer 'se_excite', which the rebuild cannot follow (it "
          "multiplies tensors of different or unknown channel counts "
          "['1', '8']: only a gate with one value per channel"
          ) in graph.skipped["c1"]


def test_global_ranking_exact_rebuild_and_sequential():
  model = keras.Sequential([
      keras.Input((10,)), keras.layers.Dense(12, activation="relu", name="h1"),
      keras.layers.Dense(6, activation="relu", name="h2"),
      keras.layers.Dense(2, name="o")])
  x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
  graph, _, narrow = assert_exact_rebuild(model, x, 0.5, ranking="global")
  assert graph.prunable_layers() == ["h1", "h2"]
  assert narrow.count_params() < model.count_params()


def test_analysis_matches_the_tf_keras_backend():
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import channel_choice, channel_graph  # pylint: disable=g-import-not-at-top
  ours_model = demo_cnn()
  theirs_model = demo_cnn(tf_keras)
  for layer in ours_model.layers:  # The same weights on both sides.
    if layer.weights:
      theirs_model.get_layer(layer.name).set_weights(layer.get_weights())
  ours = kc.analyze(ours_model)
  theirs = channel_graph.analyze(theirs_model)
  assert ours.prunable_layers() == theirs.prunable_layers()
  assert ours.channel_counts() == theirs.channel_counts()
  assert ours.skipped == theirs.skipped
  a = kc.select_channels(ours_model, ours, 0.6, ranking="global", norm="l2")
  b = channel_choice.select_channels(theirs_model, theirs, 0.6,
                                     ranking="global", norm="l2")
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])


def test_blocked_channels_and_bad_layers():
  inputs = keras.Input((6,), name="x")
  h = keras.layers.Dense(8, activation="relu", name="h")(inputs)
  g = keras.layers.Dense(8, activation="sigmoid", name="g")(inputs)
  lam = keras.layers.Lambda(lambda t: t * 2.0, name="lam")(h)
  out = keras.layers.Dense(2, name="o")(keras.layers.Concatenate()([lam, g]))
  model = keras.Model(inputs, out)
  with pytest.raises(ChannelPruningError,
                     match="has no layer whose channels can be removed") as e:
    kc.analyze(model)
  assert "'g': its activation 'sigmoid' does not map 0 to 0" in str(e.value)
  assert "'h': they feed Lambda layer 'lam'" in str(e.value)
  with pytest.raises(ChannelPruningError, match=r"Layers \['nope'\] named"):
    kc.analyze(model, explicit_layers=["nope"])
  with pytest.raises(ChannelPruningError, match="'lam' is a Lambda"):
    kc.analyze(model, explicit_layers=["lam"])


def test_subclassed_model_refused():

  class Sub(keras.Model):

    def __init__(self):
      super().__init__()
      self.d = keras.layers.Dense(2)

    def call(self, x):
      return self.d(x)

  with pytest.raises(ChannelPruningError, match="subclassed or unbuilt"):
    kc.analyze(Sub())


def _data(seed=0, n=128):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
  y = (x.mean(axis=(1, 2)).argmax(axis=1)).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n, seed=seed).batch(16)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_prune_channels_end_to_end_deterministic_and_saved(tmp_path):
  runs = []
  for _ in range(2):
    # residual_model() sets the global seed, which tf.data's shuffle reads
    # when the dataset is made: the same for both runs.
    model = residual_model()
    before = [w.copy() for w in model.get_weights()]
    runs.append(kc.prune_channels(
        model, _data(), target_sparsity=0.5, train_steps=12, finetune_steps=6,
        frequency=3, loss=LOSS, seed=4, eval_ds=_data(1)))
    assert_same_weights(before, model.get_weights())  # The input is untouched.
  result = runs[0]
  assert_same_weights(result.model.get_weights(), runs[1].model.get_weights())
  # Not vacuous: the fine-tuning moved the kept weights.
  start = kc.rebuild_narrow(kc.analyze(residual_model()), {})
  assert not np.allclose(start.get_layer("logits").get_weights()[1],
                         result.model.get_layer("logits").get_weights()[1])
  info = result.info
  assert info["channels_kept"] == {"a": 4, "b": 4, "c": 2, "sep": 3, "d1": 8}
  assert info["channel_sparsity"] == pytest.approx(0.5)
  assert info["params_after"] < info["params_before"]
  assert info["macs_after"] < info["macs_before"]
  assert np.isfinite(info["eval_loss"])
  path = str(tmp_path / "narrow.keras")
  result.model.save(path)
  loaded = keras.saving.load_model(path)
  x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(loaded.predict(x, verbose=0),
                             result.model.predict(x, verbose=0), atol=1e-6)


def test_prune_channels_continues_against_the_original_widths():
  first = kc.prune_channels(residual_model(), _data(), target_sparsity=0.25,
                            train_steps=6, finetune_steps=0, frequency=2,
                            loss=LOSS)
  second = kc.prune_channels(first.model, _data(), target_sparsity=0.5,
                             train_steps=6, finetune_steps=0, frequency=2,
                             loss=LOSS,
                             original_channels=first.info["channels_before"])
  assert second.info["channels_kept"]["a"] == 4
  assert second.info["channels_before"]["a"] == 8
  assert second.info["channel_sparsity"] == pytest.approx(0.5)


def test_bad_arguments_name_the_parameter():
  with pytest.raises(ValueError, match="`ranking` must be one of"):
    kc.prune_channels(residual_model(), _data(), target_sparsity=0.5,
                      ranking="random", train_steps=2, finetune_steps=0,
                      loss=LOSS)
  with pytest.raises(TypeError, match="`train_steps` must be an int"):
    kc.prune_channels(residual_model(), _data(), target_sparsity=0.5,
                      train_steps=2.5, finetune_steps=0, loss=LOSS)
  with pytest.raises(ChannelPruningError, match="0 channels"):
    kc.prune_channels(residual_model(), _data(), target_sparsity=0.99,
                      train_steps=2, finetune_steps=0, loss=LOSS)


def test_prune_model_dispatches_a_keras3_model_to_channels():
  from tfx_compression.components.pruner import pruning  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner.config import PrunerConfig  # pylint: disable=g-import-not-at-top
  config = PrunerConfig(sparsity_structure="channels", target_sparsity=0.5,
                        train_steps=8, finetune_steps=4, frequency=2)
  result = pruning.prune_model(residual_model(), _data(), config,
                               eval_ds=_data(1), loss=LOSS)
  assert isinstance(result.model, keras.Model)
  assert result.info["channels_kept"]["a"] == 4
  assert result.stats["sparsity"] == pytest.approx(0.5)
  assert result.stats["param_reduction"] > 0
  assert set(result.metrics) == {"loss", "accuracy"}
