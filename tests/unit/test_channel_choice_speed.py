"""The fast paths of channel_choice give the very results of the plain ones.

``choose`` scores channel classes with one gather and row mean per class size
(``_class_scores``) instead of np.mean of a list per class; ``channel_norms``
takes a name -> layer dict instead of ``model.get_layer``. Both must give the
same floats bit for bit, or the chosen channels could change.
"""

import numpy as np
import tf_keras as keras

from tfx_compression.components.pruner import channel_choice
from tfx_compression.components.pruner import channel_graph


def random_classes(rng, dtype):
  sizes = {f"layer{i}": int(rng.integers(1, 400)) for i in range(5)}
  scaled = {n: (rng.random(s) * rng.choice([1e-3, 1.0, 1e3])).astype(dtype)
            for n, s in sizes.items()}
  channels = [(n, c) for n, s in sizes.items() for c in range(s)]
  rng.shuffle(channels)
  members, i = [], 0
  while i < len(channels):
    # Numpy sums up to 8 values one by one and more pairwise: both kinds.
    k = int(rng.choice([1, 2, 3, 7, 8, 9, 17, 128, 129, 300]))
    members.append([(str(n), int(c)) for n, c in channels[i:i + k]])
    i += k
  classes = channel_choice.ChannelClasses(
      np.arange(len(members)), members, np.zeros(len(members), np.int64))
  return classes, sizes, scaled


def test_class_scores_are_the_per_class_mean_bit_for_bit():
  rng = np.random.default_rng(0)
  for trial in range(40):
    dtype = (np.float32, np.float64)[trial % 2]
    classes, sizes, scaled = random_classes(rng, dtype)
    order, groups, _ = classes.index(sizes)
    fast = channel_choice._class_scores(classes, scaled, order, groups)  # pylint: disable=protected-access
    plain = np.array([np.mean([scaled[p][c] for p, c in m])
                      for m in classes.members])
    assert fast.dtype == plain.dtype
    assert fast.tobytes() == plain.tobytes(), trial


def test_mixed_precisions_score_as_the_per_class_mean():
  rng = np.random.default_rng(1)
  classes, sizes, scaled = random_classes(rng, np.float32)
  scaled["layer0"] = scaled["layer0"].astype(np.float16)
  order, groups, _ = classes.index(sizes)
  fast = channel_choice._class_scores(classes, scaled, order, groups)  # pylint: disable=protected-access
  plain = np.array([np.mean([scaled[p][c] for p, c in m])
                    for m in classes.members])
  assert fast.tobytes() == plain.tobytes()


def test_norms_from_a_layer_dict_are_those_from_get_layer():
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(6, 3, name="conv")(inputs)
  x = keras.layers.SeparableConv2D(5, 3, name="sep")(x)
  x = keras.layers.Flatten()(x)
  x = keras.layers.Dense(4, name="dense")(x)
  model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
  graph = channel_graph.analyze(model)
  layers = {layer.name: layer for layer in model.layers}
  for norm in channel_choice.NORMS:
    plain = channel_choice.channel_norms(model, graph, norm)
    fast = channel_choice.channel_norms(model, graph, norm, layers=layers)
    assert sorted(plain) == sorted(fast) == ["conv", "dense", "sep"]
    for name, value in plain.items():
      assert fast[name].tobytes() == value.tobytes(), (norm, name)
