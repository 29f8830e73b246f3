"""Tests for structured (channel) pruning: analysis, exact rebuild, schedule, export."""
# pylint: disable=protected-access

import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_compression.components.common import model_io
from tfx_compression.components.common import signatures as signatures_lib
from tfx_compression.components.pruner import channel_choice
from tfx_compression.components.pruner import channel_graph
from tfx_compression.components.pruner import channel_rebuild
from tfx_compression.components.pruner import keras2_channels as channels
from tfx_compression.components.pruner import schedules
from tfx_compression.pipelines.trainers import digits_trainer
from tests import fixtures

L = keras.layers


# --------------------------------------------------------------------------
# Tiny models.
# --------------------------------------------------------------------------


def sequential_cnn():
  return keras.Sequential([
      keras.Input((8, 8, 2)),
      L.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
      L.Conv2D(6, 3, activation="relu", name="c2"),
      L.MaxPooling2D(2, name="pool"),
      L.Flatten(name="flat"),
      L.Dense(12, activation="relu", name="d1"),
      L.Dropout(0.3, name="drop"),
      L.Dense(3, name="out"),
  ])


def residual_concat():
  """Add joins 'a' and 'b'; Concatenate offsets; Depthwise, Separable, GAP."""
  x = keras.Input((8, 8, 3), name="img")
  a = L.Conv2D(8, 3, padding="same", activation="relu", name="a")(x)
  b = L.Conv2D(8, 3, padding="same", name="b")(a)
  r = L.ReLU(name="relu")(L.Add(name="add")([a, b]))
  c = L.Conv2D(4, 1, activation="relu", name="c")(r)
  cat = L.Concatenate(name="cat")([r, c])
  d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(cat)
  s = L.SeparableConv2D(6, 3, depth_multiplier=2, activation="relu",
                        name="sep")(d)
  g = L.GlobalAveragePooling2D(name="gap")(s)
  return keras.Model(x, L.Dense(2, name="out")(g))


def batchnorm_cnn():
  x = keras.Input((6, 6, 2))
  y = L.Conv2D(8, 3, use_bias=False, name="c1")(x)
  y = L.BatchNormalization(name="bn1")(y)
  y = L.Activation("relu", name="act1")(y)
  y = L.Conv2D(8, 3, padding="same", name="c2")(y)
  y = L.BatchNormalization(scale=False, name="bn2")(y)
  y = L.LeakyReLU(name="lrelu")(y)
  y = L.GlobalMaxPooling2D(name="gmp")(y)
  y = L.Dense(6, activation="relu", name="d1")(y)
  y = L.BatchNormalization(name="bn3")(y)
  return keras.Model(x, L.Dense(2, name="out")(y))


def dict_dense():
  inputs = {"a": keras.Input((3,), name="a"), "b": keras.Input((2,), name="b")}
  y = L.Concatenate(name="cat")([inputs["a"], inputs["b"]])
  y = L.Dense(16, activation="relu", name="h1")(y)
  y = L.Dense(8, activation="tanh", name="h2")(y)
  return keras.Model(inputs, L.Dense(1, name="y")(y))


def conv1d_reshape():
  """Conv1D, then a Reshape that keeps the channel axis, then Conv2D."""
  x = keras.Input((12, 3))
  y = L.Conv1D(6, 3, padding="same", activation="relu", name="c1")(x)
  y = L.Reshape((3, 4, 6), name="grid")(y)
  y = L.Conv2D(5, 2, activation="elu", name="c2")(y)
  y = L.Flatten(name="flat")(y)
  return keras.Model(x, L.Dense(2, name="out")(y))


def misc_layers():
  """PReLU, padding/upsampling/cropping, Multiply, and a Dense called twice."""
  x = keras.Input((6, 6, 2))
  y = L.Conv2D(6, 3, padding="same", name="a")(x)
  y = L.PReLU(shared_axes=[1, 2], name="prelu")(y)
  y = L.ZeroPadding2D(1, name="pad")(y)
  b = L.Conv2D(6, 3, activation="relu", name="b")(y)
  c = L.Conv2D(6, 3, activation="relu", name="c")(y)
  y = L.Multiply(name="mul")([b, c])
  y = L.Cropping2D(1, name="crop")(L.UpSampling2D(2, name="up")(y))
  shared = L.Dense(5, activation="relu", name="shared")
  s1 = shared(L.GlobalAveragePooling2D(name="gap")(y))
  s2 = shared(L.GlobalMaxPooling2D(name="gmp")(y))
  return keras.Model(x, L.Dense(2, name="out")(L.Concatenate()([s1, s2])))


def squeeze_excite(gate_filters=8):
  """A squeeze-and-excitation block, then MobileNetV3's hard-swish (TF ops).

  ``gate_filters=1``: a gate of one value per position, not per channel.
  """
  x = keras.Input((6, 6, 3))
  y = L.Conv2D(8, 3, padding="same", name="c1")(x)
  y = L.Activation("swish", name="act1")(L.BatchNormalization(name="bn1")(y))
  s = L.GlobalAveragePooling2D(name="squeeze")(y)
  s = L.Reshape((1, 1, 8), name="se_reshape")(s)
  s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
  if gate_filters == 1:
    s = L.Conv2D(1, 1, activation="sigmoid", name="se_expand")(y)
  else:
    s = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(s)
  y = L.Multiply(name="se_excite")([y, s])
  y = L.Conv2D(6, 3, padding="same", name="c2")(y)
  y = L.Multiply(name="hard_swish")([y, L.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)])
  y = L.GlobalAveragePooling2D(name="gap")(y)
  return keras.Model(x, L.Dense(3, name="out")(y))


MODELS = {
    "squeeze_excite": squeeze_excite,
    "misc_layers": misc_layers,
    "sequential_cnn": sequential_cnn,
    "residual_concat": residual_concat,
    "batchnorm": batchnorm_cnn,
    "dict_dense": dict_dense,
    "conv1d_reshape": conv1d_reshape,
}


def build(factory, seed=0):
  keras.utils.set_random_seed(seed)
  model = factory()
  # Random BatchNormalization statistics (so masking gamma alone would not do)
  # and PReLU slopes (zeros by default, which would hide a wrong slice).
  rng = np.random.RandomState(seed)
  for layer in model.layers:
    if isinstance(layer, (L.BatchNormalization, L.PReLU)):
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                         for w in layer.get_weights()])
  return model


def sample_inputs(model, n=4, seed=1):
  rng = np.random.RandomState(seed)
  def one(t):
    return rng.uniform(-1, 2, (n,) + tuple(t.shape[1:])).astype(np.float32)
  return tf.nest.map_structure(one, model._nested_inputs)


def width(model, name):
  layer = model.get_layer(name)
  return layer.units if isinstance(layer, L.Dense) else layer.filters


# --------------------------------------------------------------------------
# The rebuild is exact.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rebuild_matches_wide_model_with_channels_zeroed(name):
  model = build(MODELS[name])
  graph = channel_graph.analyze(model)
  kept = channel_choice.select_channels(model, graph, 0.5)
  assert kept and all(v.size < graph.producers[k].ids.size
                      for k, v in kept.items())
  wide = channel_rebuild.rebuild_narrow(graph, {})
  channel_rebuild.zero_channels(wide, graph, kept)
  narrow = channel_rebuild.rebuild_narrow(graph, kept)
  x = sample_inputs(model)
  original, zeroed, got = model(x).numpy(), wide(x).numpy(), narrow(x).numpy()
  assert not np.allclose(original, zeroed, atol=1e-4), "nothing was zeroed"
  np.testing.assert_allclose(got, zeroed, rtol=1e-5, atol=1e-5)
  for layer_name, idx in kept.items():
    assert width(narrow, layer_name) == idx.size
  assert narrow.count_params() < model.count_params()
  assert channel_rebuild.count_macs(narrow) < channel_rebuild.count_macs(model)
  # The model passed in is never touched.
  np.testing.assert_allclose(model(x).numpy(), original)


def test_squeeze_excite_gate_loses_its_unit_with_the_gated_channel():
  model = build(squeeze_excite)
  graph = channel_graph.analyze(model)
  assert graph.prunable_layers() == ["c1", "se_reduce", "se_expand", "c2"]
  assert ["c1", "se_expand"] in graph.components
  assert not graph.partial and set(graph.skipped) == {"out"}
  kept = channel_choice.select_channels(model, graph, 0.5)
  np.testing.assert_array_equal(kept["c1"], kept["se_expand"])
  narrow = channel_rebuild.rebuild_narrow(graph, kept)
  assert narrow.get_layer("se_expand").kernel.shape == (1, 1, 2, 4)
  assert narrow.get_layer("se_expand").bias.shape == (4,)
  assert narrow.get_layer("se_reshape").target_shape == (1, 1, 4)


def test_gate_that_is_not_per_channel_blocks_and_sigmoid_elsewhere_stays():
  model = build(lambda: squeeze_excite(gate_filters=1))
  graph = channel_graph.analyze(model)
  assert "c1" in graph.skipped and "se_expand" in graph.skipped
  assert ("Multiply layer 'se_excite', which the rebuild cannot follow (it "
          "multiplies tensors of different or unknown channel counts "
          "['1', '8']: only a gate with one value per channel") in graph.skipped["c1"]
  # A sigmoid that gates nothing keeps its channels, for that reason.
  x = keras.Input((6,))
  g = L.Dense(4, activation="sigmoid", name="g")(x)
  h = L.Dense(4, activation="relu", name="h")(L.Add(name="add")([g, L.Dense(4, name="k")(x)]))
  graph = channel_graph.analyze(keras.Model(x, L.Dense(2, name="o")(h)))
  assert graph.prunable_layers() == ["h"]
  assert graph.skipped["g"] == ("its activation 'sigmoid' does not map 0 to 0, "
                                "so a removed channel would not be zero")


def test_joined_tensors_lose_the_same_channels():
  model = build(residual_concat)
  graph = channel_graph.analyze(model)
  assert ["a", "b"] in graph.components
  kept = channel_choice.select_channels(model, graph, 0.5)
  np.testing.assert_array_equal(kept["a"], kept["b"])
  narrow = channel_rebuild.rebuild_narrow(graph, kept)
  # Concatenate of 4 kept 'a'/'b' channels and 2 kept 'c' channels, then x2.
  assert narrow.get_layer("dw").depthwise_kernel.shape[2] == 4 + 2
  assert narrow.get_layer("sep").pointwise_kernel.shape[2] == 12 * 2
  with pytest.raises(channel_graph.ChannelPruningError, match="disagree"):
    channel_rebuild.rebuild_narrow(graph, {"a": [0, 1], "b": [2, 3]})


def test_dict_inputs_and_names_are_kept():
  model = build(dict_dense)
  graph = channel_graph.analyze(model)
  narrow = channel_rebuild.rebuild_narrow(graph, channel_choice.select_channels(model, graph, 0.5))
  assert isinstance(narrow.input, dict) and sorted(narrow.input) == ["a", "b"]
  assert narrow.output_names == model.output_names
  assert (width(narrow, "h1"), width(narrow, "h2")) == (8, 4)


def test_half_of_two_consecutive_layers_leaves_a_quarter_between_them():
  keras.utils.set_random_seed(0)
  x = keras.Input((20,))
  y = L.Dense(64, activation="relu", name="d1")(x)
  y = L.Dense(64, activation="relu", name="d2")(y)
  model = keras.Model(x, L.Dense(3, name="out")(y))
  graph = channel_graph.analyze(model)
  narrow = channel_rebuild.rebuild_narrow(graph, channel_choice.select_channels(model, graph, 0.5))
  assert narrow.get_layer("d2").kernel.shape == (32, 32)  # 64x64 -> a quarter
  assert narrow.get_layer("d1").kernel.shape == (20, 32)
  assert narrow.get_layer("out").kernel.shape == (32, 3)
  expected = (20 * 32 + 32) + (32 * 32 + 32) + (32 * 3 + 3)
  assert narrow.count_params() == expected


def test_kept_channels_are_the_strongest_filters():
  model = build(dict_dense)
  h1 = model.get_layer("h1")
  kernel, bias = h1.get_weights()
  kernel[:, :8] *= 0.01  # The first 8 units become the weakest.
  h1.set_weights([kernel, bias])
  graph = channel_graph.analyze(model)
  kept = channel_choice.select_channels(model, graph, 0.5)
  np.testing.assert_array_equal(kept["h1"], np.arange(8, 16))


def test_global_ranking_compares_layers_after_normalizing():
  model = build(dict_dense)
  h1, h2 = model.get_layer("h1"), model.get_layer("h2")
  kernel, bias = h1.get_weights()
  kernel[:, :6] *= 0.05  # Six clearly weak units in h1...
  h1.set_weights([kernel, bias])
  kernel, bias = h2.get_weights()
  h2.set_weights([kernel * 1e-3, bias])  # ...and a layer-wide scale, normalized away.
  graph = channel_graph.analyze(model)
  kept = channel_choice.select_channels(model, graph, 0.5, ranking="global")
  assert sum(v.size for v in kept.values()) == 12  # Half of 16 + 8.
  assert not set(range(6)) & set(kept["h1"].tolist())
  assert kept["h2"].size > 1  # Raw norms would strip h2 down to one unit.


def test_global_ranking_keeps_one_channel_per_layer():
  model = build(dict_dense)
  graph = channel_graph.analyze(model)
  kept = channel_choice.select_channels(model, graph, 0.9, ranking="global")
  assert {k: v.size for k, v in kept.items()} == {"h1": 1, "h2": 1}
  with pytest.raises(channel_graph.ChannelPruningError,
                     match=r"target_sparsity=0\.97 would keep 1 of the 24"):
    channel_choice.select_channels(model, graph, 0.97, ranking="global")


def test_blocked_producer_is_skipped_with_reason_and_explicit_fails():
  keras.utils.set_random_seed(0)
  x = keras.Input((6, 6, 1))
  y = L.Conv2D(4, 3, activation="relu", name="c1")(x)
  y = L.Lambda(lambda t: t * 2.0, name="double")(y)
  y = L.Conv2D(4, 3, activation="relu", name="c2")(y)
  y = L.Flatten()(y)
  y = L.Dense(8, activation="relu", name="d1")(y)
  model = keras.Model(x, L.Dense(2, name="out")(y))
  graph = channel_graph.analyze(model)
  assert graph.prunable_layers() == ["c2", "d1"]
  assert "'double'" in graph.skipped["c1"] and "Lambda" in graph.skipped["c1"]
  assert "model output 'out'" in graph.skipped["out"]
  with pytest.raises(channel_graph.ChannelPruningError,
                     match=r"'c1'.*Lambda layer 'double'"):
    channel_graph.analyze(model, explicit_layers=["c1"])
  with pytest.raises(channel_graph.ChannelPruningError, match="'nope'.*not in model"):
    channel_graph.analyze(model, explicit_layers=["nope"])
  # A layer the filter excludes is not pruned.
  only = channel_graph.analyze(model, layer_filter=lambda l: l.name == "d1")
  assert only.prunable_layers() == ["d1"]


def test_channels_that_reach_an_output_through_pooling_stay():
  keras.utils.set_random_seed(0)
  x = keras.Input((6, 6, 1))
  y = L.Conv2D(4, 3, activation="relu", name="c1")(x)
  y = L.Conv2D(3, 3, name="c2")(y)
  model = keras.Model(x, L.GlobalAveragePooling2D(name="gap")(y))
  graph = channel_graph.analyze(model)
  assert graph.prunable_layers() == ["c1"]
  assert "model output 'gap'" in graph.skipped["c2"]


def test_residual_from_an_input_blocks_the_group():
  keras.utils.set_random_seed(0)
  x = keras.Input((6, 6, 4))
  a = L.Conv2D(4, 3, padding="same", name="a")(x)
  y = L.Add(name="add")([x, a])
  y = L.Conv2D(4, 3, name="keep")(y)
  model = keras.Model(x, L.Dense(2, name="out")(L.Flatten()(y)))
  graph = channel_graph.analyze(model)
  assert "'add'" in graph.skipped["a"]
  assert graph.prunable_layers() == ["keep"]


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------


def test_model_without_prunable_layer_fails_clearly():
  x = keras.Input((4,))
  model = keras.Model(x, L.Dense(3, name="only")(x))
  with pytest.raises(channel_graph.ChannelPruningError,
                     match=r"no layer.*'only'.*model output.*unstructured"):
    channel_graph.analyze(model)


def test_subclassed_model_fails_clearly():

  class Tiny(keras.Model):

    def __init__(self):
      super().__init__(name="tiny")
      self.d = L.Dense(3)

    def call(self, x):
      return self.d(x)

  model = Tiny()
  model(np.zeros((1, 4), np.float32))
  with pytest.raises(channel_graph.ChannelPruningError,
                     match="'tiny' is a subclassed model.*functional"):
    channel_graph.analyze(model)


def test_sparsity_leaving_zero_channels_names_layer_and_value():
  model = build(sequential_cnn)
  graph = channel_graph.analyze(model)
  with pytest.raises(channel_graph.ChannelPruningError,
                     match=r"target_sparsity=0\.95 would leave layer 'c1' "
                     r"\(8 channels\), 'c2' \(6 channels\) with 0 channels.*"
                     r"<= 0\.9166\b"):
    channel_choice.removal_targets(graph, 0.95)
  assert channel_choice.removal_targets(graph, 0.9166) == {0: 7, 1: 5, 2: 11}


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(target_sparsity=1.0), ValueError, r"target_sparsity.*\[0, 1\).*1\.0"),
    (dict(target_sparsity="0.5"), TypeError, "target_sparsity.*str"),
    (dict(ranking="best"), ValueError, "ranking.*'best'"),
    (dict(norm="l3"), ValueError, "norm.*'l3'"),
    (dict(train_steps=-1), ValueError, "train_steps.*-1"),
    (dict(frequency=0), ValueError, "frequency.*0"),
    (dict(train_steps=3), ValueError, "train_ds.*train_steps"),
])
def test_bad_arguments_name_the_parameter(kwargs, error, match):
  args = dict(target_sparsity=0.5, train_steps=0, finetune_steps=0,
              loss="mse")
  args.update(kwargs)
  with pytest.raises(error, match=match):
    channels.prune_channels(build(dict_dense), None, **args)


# --------------------------------------------------------------------------
# Gradual pruning, fine-tuning, the step-wise search.
# --------------------------------------------------------------------------


def dense_data(n=64, seed=0):
  rng = np.random.RandomState(seed)
  x = {"a": rng.rand(n, 3).astype(np.float32),
       "b": rng.rand(n, 2).astype(np.float32)}
  y = (x["a"].sum(1, keepdims=True) - x["b"][:, :1]).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_schedule_ramps_to_the_target():
  steps = schedules.schedule_steps(20, begin_step=2, end_step=12, frequency=4)
  assert list(steps) == [2, 6, 10, 12]
  values = list(steps.values())
  assert values[0] == 0.0 and values[-1] == 1.0
  assert all(a < b for a, b in zip(values, values[1:]))
  assert list(schedules.schedule_steps(5, end_step=8, frequency=4)) == [0, 4]


def test_prune_channels_gradually_then_fine_tunes():
  model = build(dict_dense)
  before = [w.copy() for w in model.get_weights()]
  seen, leaked = [], []
  original_update = channels._GradualChannelPruning.update

  def spy(self, fraction):
    # Channels masked earlier must still be exactly zero after training steps.
    dropped = self.dropped[self._graph.roots]
    for name, norms in channel_choice.channel_norms(self.model, self._graph).items():
      leaked.append(float(norms[dropped[self._graph.producers[name].ids]].sum()))
    original_update(self, fraction)
    seen.append(int(self.dropped.sum()))

  channels._GradualChannelPruning.update = spy
  try:
    result = channels.prune_channels(
        model, dense_data(), target_sparsity=0.5, train_steps=8,
        finetune_steps=3, frequency=2, end_step=6, loss="mse", seed=1,
        learning_rate=1e-2, eval_ds=dense_data(seed=1))
  finally:
    channels._GradualChannelPruning.update = original_update
  # Masked channels grow step by step up to the target (8 + 4 removed).
  assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 12
  assert len(set(seen)) > 2
  assert leaked and not any(leaked)
  info = result.info
  assert info["channels_kept"] == {"h1": 8, "h2": 4}
  assert info["channels_before"] == {"h1": 16, "h2": 8}
  assert info["channel_sparsity"] == pytest.approx(0.5)
  assert info["params_after"] == result.model.count_params() < info["params_before"]
  assert info["macs_after"] < info["macs_before"]
  assert "y" in info["skipped"] and np.isfinite(info["eval_loss"])
  fixtures.assert_same_weights(before, model.get_weights())


def test_continuing_from_a_narrowed_model_is_relative_to_the_original():
  model = build(dict_dense)
  first = channels.prune_channels(model, dense_data(), target_sparsity=0.25,
                                  train_steps=2, finetune_steps=1, loss="mse")
  assert first.info["channels_kept"] == {"h1": 12, "h2": 6}
  second = channels.prune_channels(
      first.model, dense_data(), target_sparsity=0.5, train_steps=2,
      finetune_steps=1, loss="mse",
      original_channels=first.info["channels_before"])
  assert second.info["channels_input"] == {"h1": 12, "h2": 6}
  assert second.info["channels_kept"] == {"h1": 8, "h2": 4}
  assert second.info["channels_before"] == {"h1": 16, "h2": 8}
  assert second.info["channel_sparsity"] == pytest.approx(0.5)


# --------------------------------------------------------------------------
# Export with the original's serving signatures.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer_like_model(tmp_path_factory):
  keras.utils.set_random_seed(0)
  root = str(tmp_path_factory.mktemp("trainer"))
  art = fixtures.save_trainer_model(digits_trainer.build_model(), root)
  return model_io.load_keras_model(os.path.join(art.uri, model_io.SERVING_DIR))


def test_export_keeps_signatures_and_loads_with_plain_tf(trainer_like_model,
                                                         tmp_path):
  original = trainer_like_model
  result = channels.prune_channels(original, None, target_sparsity=0.5,
                                   train_steps=0, finetune_steps=0, loss="mse")
  path = str(tmp_path / "narrow")
  examples = fixtures.serialized_eval_examples(8)
  out = channels.export_narrow_model(result.model, original, path, examples)
  assert out["regenerated"] == ["serving_default"]
  loaded = tf.saved_model.load(path)  # Plain TensorFlow.
  assert list(loaded.signatures) == list(original.signatures)
  want = original.signatures["serving_default"]
  got = loaded.signatures["serving_default"]
  assert got.structured_input_signature == want.structured_input_signature
  assert got.structured_outputs == want.structured_outputs
  probs = got(examples=tf.constant(examples))["probabilities"].numpy()
  spec = {k: v for k, v in fixtures.feature_spec().items() if k != fixtures.LABEL}
  features = tf.io.parse_example(tf.constant(examples), spec)
  np.testing.assert_allclose(probs, result.model(features).numpy(), atol=1e-5)
  assert model_io.model_kind(path) == "keras"
  reloaded = model_io.load_keras_model(path)
  assert reloaded.get_layer("conv2").filters == 32


def test_export_refuses_a_signature_it_cannot_recreate(tmp_path):
  keras.utils.set_random_seed(0)
  model = dict_dense()
  spec = {"a": tf.io.FixedLenFeature([3], tf.float32),
          "b": tf.io.FixedLenFeature([2], tf.float32)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(serialized):
    y = model(tf.io.parse_example(serialized, spec))
    return {"y": y * 2.0}  # Post-processing the rebuild cannot know about.

  model.save(str(tmp_path / "orig"), save_format="tf",
             signatures={"serving_default": serve.get_concrete_function()})
  original = model_io.load_keras_model(str(tmp_path / "orig"))
  narrow = channels.prune_channels(original, None, target_sparsity=0.5,
                                   train_steps=0, finetune_steps=0,
                                   loss="mse").model
  with pytest.raises(signatures_lib.SignatureExportError,
                     match=r"'serving_default'.*output 'y' differs.*unstructured"):
    channels.export_narrow_model(narrow, original, str(tmp_path / "narrow"))
  assert not os.path.exists(tmp_path / "narrow" / "saved_model.pb")


def test_export_never_runs_a_signature_that_acts_outside_the_model(tmp_path):
  keras.utils.set_random_seed(0)
  model = dict_dense()
  spec = {"a": tf.io.FixedLenFeature([3], tf.float32),
          "b": tf.io.FixedLenFeature([2], tf.float32)}
  marker = tmp_path / "written_by_the_signature.txt"

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(serialized):
    tf.io.write_file(str(marker), "the graph ran")  # A side effect.
    return {"y": model(tf.io.parse_example(serialized, spec))}

  model.save(str(tmp_path / "orig"), save_format="tf",
             signatures={"serving_default": serve.get_concrete_function()})
  original = model_io.load_keras_model(str(tmp_path / "orig"))
  assert signatures_lib.unsafe_ops(original.signatures["serving_default"]) == [
      "WriteFile"]
  narrow = channels.prune_channels(original, None, target_sparsity=0.5,
                                   train_steps=0, finetune_steps=0,
                                   loss="mse").model
  with pytest.raises(signatures_lib.SignatureExportError,
                     match=r"'serving_default'.*WriteFile.*not run.*unstructured"):
    channels.export_narrow_model(narrow, original, str(tmp_path / "narrow"))
  assert not marker.exists()
  assert not os.path.exists(tmp_path / "narrow" / "saved_model.pb")


def test_export_with_transform_keeps_transform_features(tmp_path):
  # pylint: disable=g-import-not-at-top
  tft = pytest.importorskip("tensorflow_transform")
  import tensorflow_transform.beam as tft_beam
  from tensorflow_transform.tf_metadata import dataset_metadata
  from tensorflow_transform.tf_metadata import metadata_io
  from tensorflow_transform.tf_metadata import schema_utils

  raw_spec = {"a": tf.io.FixedLenFeature([1], tf.float32),
              "c": tf.io.FixedLenFeature([1], tf.string),
              "label": tf.io.FixedLenFeature([1], tf.int64)}
  meta = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(raw_spec))
  rng = np.random.RandomState(0)
  data = [{"a": [float(rng.randn())], "c": [rng.choice([b"x", b"y", b"z"])],
           "label": [int(rng.randint(2))]} for _ in range(20)]

  def preprocessing_fn(inputs):
    return {"a_xf": tft.scale_to_z_score(inputs["a"]),
            "c_xf": tf.cast(tft.compute_and_apply_vocabulary(inputs["c"]),
                            tf.float32),
            "label": inputs["label"]}

  tft_dir = str(tmp_path / "transform")
  with tft_beam.Context(temp_dir=str(tmp_path / "tmp")):
    (_, _), transform_fn = ((data, meta)
                            | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn))
    _ = transform_fn | tft_beam.WriteTransformFn(tft_dir)
  metadata_io.write_metadata(meta, os.path.join(tft_dir, "metadata"))
  tf_output = tft.TFTransformOutput(tft_dir)

  keras.utils.set_random_seed(0)
  ins = {k: keras.Input((1,), name=k) for k in ("a_xf", "c_xf")}
  y = L.Dense(8, activation="relu", name="h")(L.Concatenate()(list(ins.values())))
  model = keras.Model(ins, L.Dense(2, activation="softmax", name="p")(y))
  model.tft_layer = tf_output.transform_features_layer()
  serving_spec = {k: v for k, v in raw_spec.items() if k != "label"}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve(serialized):
    transformed = model.tft_layer(tf.io.parse_example(serialized, serving_spec))
    transformed.pop("label", None)
    return {"outputs": model(transformed)}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def transform_features(serialized):
    return model.tft_layer(tf.io.parse_example(serialized, raw_spec))

  model.save(str(tmp_path / "orig"), save_format="tf", signatures={
      "serving_default": serve.get_concrete_function(),
      "transform_features": transform_features.get_concrete_function()})
  original = model_io.load_keras_model(str(tmp_path / "orig"))
  narrow = channels.prune_channels(original, None, target_sparsity=0.5,
                                   train_steps=0, finetune_steps=0,
                                   loss="mse").model
  examples = [tf.train.Example(features=tf.train.Features(feature={
      "a": tf.train.Feature(float_list=tf.train.FloatList(value=d["a"])),
      "c": tf.train.Feature(bytes_list=tf.train.BytesList(value=d["c"])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=d["label"])),
  })).SerializeToString() for d in data[:6]]
  out = channels.export_narrow_model(narrow, original, str(tmp_path / "narrow"),
                                     examples, label_key="label")
  assert out["regenerated"] == ["serving_default"]
  assert out["kept"] == ["transform_features"]
  loaded = tf.saved_model.load(str(tmp_path / "narrow"))
  batch = tf.constant(examples)
  want = original.signatures["transform_features"](examples=batch)
  got = loaded.signatures["transform_features"](examples=batch)
  assert sorted(got) == sorted(want)
  np.testing.assert_allclose(got["c_xf"].numpy(), want["c_xf"].numpy())
  assert loaded.signatures["serving_default"](examples=batch)["outputs"].shape == (6, 2)
