"""The selecting mask update gives tfmot's masks, bit for bit (tf_keras path)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfx_compression.components.pruner import keras2_magnitude
from tfx_compression.components.pruner import keras2_mask_select
from tests import fixtures

LOSS = keras.losses.SparseCategoricalCrossentropy()


def _kernels(rng):
  """Kernels with the awkward cases: ties, exact zeros, denormals, one value."""
  yield rng.normal(size=1000).astype(np.float32)
  yield (np.round(rng.normal(size=777) * 4) / 4).astype(np.float32)  # ties
  half_zero = rng.normal(size=500).astype(np.float32)
  half_zero[:250] = 0.0
  yield half_zero
  yield np.full(64, -0.0, np.float32)
  yield np.array([3.0], np.float32)
  yield (rng.normal(size=300) * 1e-40).astype(np.float32)  # denormals
  yield np.array([1e30, -1e30, 1.0, 65536.0, 65537.0, 1.0000001], np.float32)


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.75, 0.9, 0.999])
def test_kth_largest_is_the_sorted_kth(sparsity):
  rng = np.random.default_rng(0)
  for kernel in _kernels(rng):
    magnitudes = np.abs(kernel)
    size = magnitudes.size
    k = int(max(np.round(np.float32(size) * (np.float32(1) - np.float32(sparsity))), 1))
    expected = np.sort(magnitudes)[::-1][k - 1]
    got = keras2_mask_select.kth_largest(tf.constant(magnitudes), tf.constant(k))
    assert got.numpy().tobytes() == expected.tobytes(), (size, k, got, expected)


def _wrapped_dense(kernel_shape=(40, 30), seed=0):
  layer = pruning_wrapper.PruneLowMagnitude(
      keras.layers.Dense(kernel_shape[1]), pruning_schedule=
      keras2_magnitude._sparsity.PolynomialDecay(0.2, 0.8, 0, 10, frequency=1))
  layer.build((None, kernel_shape[0]))
  rng = np.random.default_rng(seed)
  weights = np.round(rng.normal(size=kernel_shape) * 8) / 8  # many ties
  layer.layer.kernel.assign(weights.astype(np.float32))
  return layer


@pytest.mark.parametrize("step", [0, 3, 10])
def test_update_is_tfmots_mask_and_threshold(step):
  layer = _wrapped_dense()
  layer.pruning_step.assign(step)
  obj = layer.pruning_obj
  kernel = layer.layer.kernel
  theirs = pruning_impl.Pruning._update_mask(obj, kernel)
  assert keras2_mask_select.use_selection([layer]) == 1
  assert type(layer.pruning_obj) is keras2_mask_select.SelectPruning
  ours = layer.pruning_obj._update_mask(kernel)
  assert ours[0].numpy() == theirs[0].numpy()
  np.testing.assert_array_equal(ours[1].numpy(), theirs[1].numpy())
  # Not vacuous: the mask prunes something at these steps.
  assert 0 < ours[1].numpy().mean() < 1


def test_pruning_uses_it_and_ends_where_tfmot_ends(monkeypatch):
  """The same weights after fine-tuning with tfmot's update and with ours."""
  switched = []
  real = keras2_mask_select.use_selection
  monkeypatch.setattr(keras2_mask_select, "use_selection",
                      lambda layers: switched.append(real(layers)) or switched[-1])
  ours = keras2_magnitude.prune_to(
      fixtures.tiny_model(), fixtures.tiny_data(), target_sparsity=0.7,
      steps=40, frequency=5, loss=LOSS, seed=1)
  assert switched == [3]  # d1, d2, out
  monkeypatch.setattr(keras2_mask_select, "use_selection", lambda layers: 0)
  theirs = keras2_magnitude.prune_to(
      fixtures.tiny_model(), fixtures.tiny_data(), target_sparsity=0.7,
      steps=40, frequency=5, loss=LOSS, seed=1)
  fixtures.assert_same_weights(ours.get_weights(), theirs.get_weights())
  assert (ours.get_layer("d1").kernel.numpy() == 0).mean() == pytest.approx(0.7, abs=0.01)
