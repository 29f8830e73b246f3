"""Hand-written channel pruning of MobileNetV2, as a user writes it without our Pruner.

tfmot has no channel pruning, so this is what a tf_keras user writes by hand
(the approach of the filter-pruning papers on MobileNetV2): remove the weakest
half (L1 norm of the filter) of each inverted-residual block's expansion
channels (``block_N_expand`` -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 ->
``block_N_project``), and of the last 1x1 convolution (``Conv_1``, 1280
channels feeding the classifier), in one shot; rebuild the narrower model with
``clone_model`` and a ``clone_function`` that lowers those layers' ``filters``;
copy the kept slices; fine-tune. The channels that meet at the residual Adds
(block outputs) and the stem are left alone: keeping them consistent across
each Add group is the bookkeeping our channel graph does and a hand-written
script usually skips. Then the TFLite converter as the guides call it
(``benchmarks/reference.py``'s ``convert``).

Example:

    narrow = prune_channels_by_hand(dense, train_ds, share=0.5, steps=400)
"""

import math
import re
from typing import Dict

import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tf_keras as keras

_EXPAND = re.compile(r"^block_(\d+)_expand$")


def _keep(kernel: np.ndarray, share: float) -> np.ndarray:
  """Indices of the output channels with the largest L1 norms, in order."""
  n = kernel.shape[-1]
  k = max(1, int(math.ceil(n * (1.0 - share))))
  norms = np.abs(kernel).reshape(-1, n).sum(axis=0)
  return np.sort(np.argsort(-norms, kind="stable")[:k])


def choose(model: keras.Model, share: float) -> Dict[str, np.ndarray]:
  """Pruned conv name -> kept output channels (expansions and Conv_1)."""
  keep = {}
  for layer in model.layers:
    if _EXPAND.match(layer.name) or layer.name == "Conv_1":
      keep[layer.name] = _keep(layer.get_weights()[0], share)
  return keep


def _slices(model: keras.Model, keep: Dict[str, np.ndarray]):
  """Layer name -> function(weights) -> sliced weights."""
  out = {}
  for name, k in keep.items():
    out[name] = lambda w, k=k: [w[0][..., k]] + [b[k] for b in w[1:]]
    if name == "Conv_1":
      out["Conv_1_bn"] = lambda w, k=k: [v[k] for v in w]
      out["predictions"] = lambda w, k=k: [w[0][k], w[1]]
      continue
    block = _EXPAND.match(name).group(1)
    out[f"block_{block}_expand_BN"] = lambda w, k=k: [v[k] for v in w]
    out[f"block_{block}_depthwise"] = lambda w, k=k: [w[0][:, :, k]] + [
        b[k] for b in w[1:]]
    out[f"block_{block}_depthwise_BN"] = lambda w, k=k: [v[k] for v in w]
    out[f"block_{block}_project"] = lambda w, k=k: [w[0][:, :, k]] + w[1:]
  del model
  return out


def rebuild(model: keras.Model, keep: Dict[str, np.ndarray]) -> keras.Model:
  """The narrower model with the kept slices of every weight."""

  def clone_fn(layer):
    config = layer.get_config()
    if layer.name in keep:
      config["filters"] = int(keep[layer.name].size)
    return layer.__class__.from_config(config)

  narrow = keras.models.clone_model(model, clone_function=clone_fn)
  slices = _slices(model, keep)
  for layer in narrow.layers:
    weights = model.get_layer(layer.name).get_weights()
    if not weights:
      continue
    if layer.name in slices:
      weights = slices[layer.name](weights)
    layer.set_weights(weights)
  return narrow


def prune_channels_by_hand(model: keras.Model, train_ds, *, share: float,
                           steps: int, learning_rate: float = 1e-3,
                           seed: int = 0) -> keras.Model:
  """One-shot L1 removal of ``share`` of the chosen channels, then fine-tuning."""
  keras.utils.set_random_seed(seed)
  narrow = rebuild(model, choose(model, share))
  narrow.compile(optimizer=keras.optimizers.Adam(learning_rate),
                 loss=keras.losses.SparseCategoricalCrossentropy(),
                 metrics=["accuracy"])
  narrow.fit(train_ds, steps_per_epoch=steps, epochs=1, verbose=0)
  return narrow


def flat_input(model: keras.Model, join: str = "pixels") -> keras.Model:
  """The same layers and weights fed one [batch, 64] tensor (no Concatenate)."""
  tail = keras.Model(model.get_layer(join).output, model.output)
  inputs = keras.Input(shape=(int(tail.input.shape[-1]),), name="pixels_flat")
  return keras.Model(inputs, tail(inputs), name=model.name + "_flat")
