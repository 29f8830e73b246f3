"""The ``distribution`` parameter: choosing the strategy, and fine-tuning over two devices.

The two-device runs split the CPU into two logical devices, which must happen
before TensorFlow initialises: they run in a child process (this module run as
``python -m tests.unit.test_distribute``), once for both Kerases and both
structures, and the test compares what it prints.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfx_compression.components.common import distribute
from tfx_compression.components.pruner.config import PrunerConfig
from tfx_compression.components.quantizer.config import QuantizerConfig

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
_TWO_WORKERS = {"cluster": {"worker": ["w0:2222", "w1:2222"]},
                "task": {"type": "worker", "index": 1}}
EVAL_EXAMPLES = 96


# Choosing the strategy (no strategy is built, no worker started).


def test_auto_is_no_strategy_on_one_cpu(monkeypatch):
  monkeypatch.delenv(distribute.TF_CONFIG_ENV, raising=False)
  assert not tf.config.list_logical_devices("GPU")  # This machine: CPU only.
  assert distribute.choose("auto") == distribute.OFF
  with distribute.scope("auto") as strategy:
    assert strategy is None and not tf.distribute.has_strategy()


def test_auto_is_multi_worker_from_a_tf_config_with_two_workers(monkeypatch):
  monkeypatch.setenv(distribute.TF_CONFIG_ENV, json.dumps(_TWO_WORKERS))
  assert distribute.worker_count() == 2
  assert distribute.choose("auto", gpu_count=0) == distribute.MULTI_WORKER
  assert not distribute.is_chief()  # worker 1


@pytest.mark.parametrize("tf_config,gpus,want", [
    ({"cluster": {"chief": ["c:1"]}, "task": {"type": "chief", "index": 0}},
     0, distribute.OFF),  # a one-task cluster is one worker
    ({"cluster": {"chief": ["c:1"], "worker": ["w:1"]}}, 0,
     distribute.MULTI_WORKER),
    ({}, 2, distribute.MIRRORED),
    ({}, 1, distribute.OFF),
])
def test_auto_choice(tf_config, gpus, want):
  assert distribute.choose("auto", tf_config=tf_config, gpu_count=gpus) == want


def test_explicit_choices_are_kept_and_normalised():
  assert distribute.choose(" Mirrored", gpu_count=0) == distribute.MIRRORED
  assert distribute.choose("multi-worker", tf_config={}) == distribute.MULTI_WORKER
  assert distribute.choose("off", tf_config=_TWO_WORKERS) == distribute.OFF


@pytest.mark.parametrize("tf_config,chief", [
    ({}, True),
    ({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
      "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
      "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"worker": ["a:1", "b:1"]},
      "task": {"type": "worker", "index": 0}}, True),
])
def test_is_chief(tf_config, chief):
  assert distribute.is_chief(tf_config) is chief


def test_bad_values_name_the_parameter_and_value(monkeypatch):
  with pytest.raises(ValueError, match=r"`distribution`='gpus' is not one of "
                     r"\('auto', 'mirrored', 'multi_worker', 'off'\)"):
    distribute.choose("gpus")
  with pytest.raises(TypeError, match=r"`distribution` must be a string.*int 2"):
    distribute.choose(2)
  with pytest.raises(ValueError, match="`distribution`='tpu'"):
    PrunerConfig(distribution="tpu")
  with pytest.raises(ValueError, match="`distribution`='gpu'"):
    QuantizerConfig(distribution="gpu")
  monkeypatch.setenv(distribute.TF_CONFIG_ENV, "{not json")
  with pytest.raises(ValueError, match="TF_CONFIG.*not JSON"):
    distribute.choose("auto")


def test_configs_normalise_and_default_to_auto():
  assert PrunerConfig().distribution == "auto"
  assert PrunerConfig(distribution="OFF").distribution == "off"
  assert QuantizerConfig().distribution == "auto"
  assert QuantizerConfig.from_parameters(
      {"distribution": "Mirrored"}).distribution == "mirrored"


def test_components_take_the_parameter():
  from tfx.types import channel  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx_compression import Pruner, Quantizer  # pylint: disable=g-import-not-at-top
  inputs = dict(model=channel.Channel(type=standard_artifacts.Model),
                examples=channel.Channel(type=standard_artifacts.Examples),
                schema=channel.Channel(type=standard_artifacts.Schema),
                label_key="y")
  assert Pruner(**inputs, distribution="mirrored").exec_properties[
      "distribution"] == "mirrored"
  assert Quantizer(**inputs, quantization="qat", distribution="off"
                   ).exec_properties["distribution"] == "off"
  with pytest.raises(ValueError, match="`distribution`='gpu'"):
    Pruner(**inputs, distribution="gpu")
  with pytest.raises(ValueError, match="`distribution`='gpu'"):
    Quantizer(**inputs, quantization="qat", distribution="gpu")


def test_a_callers_strategy_is_kept():
  mine = tf.distribute.OneDeviceStrategy("/cpu:0")
  with mine.scope():
    with distribute.scope("mirrored") as strategy:
      assert strategy is mine


# Two logical CPUs against one device: same masks, same accuracy.


def test_mirrored_over_two_cpus_prunes_as_one_device():
  out = subprocess.run(
      [sys.executable, "-m", "tests.unit.test_distribute"], cwd=_ROOT,
      capture_output=True, text=True, timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  runs = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(runs) == {"keras2/unstructured", "keras2/channels",
                       "keras3/unstructured", "keras3/channels",
                       "keras2/qat"}, runs.keys()
  for name, run in runs.items():
    assert run["replicas"] == [1, 2], name
    off, mirrored = run["accuracy"]
    if name == "keras2/qat":
      # QAT's activation ranges are moving min/max of the first replica's
      # share of each batch (as a BatchNorm's statistics), so not the same
      # numbers: the same training, close weights, close accuracy.
      assert run["max_kernel_diff"] < 1e-2, run
      assert abs(off - mirrored) <= 0.05, run
      continue
    # Unstructured: the same zeros. Channels: the narrow models have the same
    # widths, and weights this close only if the same channels were kept.
    assert run["masks_equal"], (name, run)
    assert run["zeros"] > 0 or name.endswith("channels"), (name, run)
    assert run["max_weight_diff"] < 1e-5, (name, run)
    assert abs(off - mirrored) * EVAL_EXAMPLES <= 1, (name, run)


def _tiny(keras_module, conv: bool, seed: int = 0):
  keras_module.utils.set_random_seed(seed)
  inputs = keras_module.Input(shape=(16,), name="x")
  h = inputs
  if conv:
    h = keras_module.layers.Reshape((4, 4, 1))(h)
    h = keras_module.layers.Conv2D(8, 3, padding="same", activation="relu",
                                   name="c1")(h)
    h = keras_module.layers.Conv2D(8, 3, padding="same", activation="relu",
                                   name="c2")(h)
    h = keras_module.layers.Flatten()(h)
  else:
    h = keras_module.layers.Dense(32, activation="relu", name="d1")(h)
    h = keras_module.layers.Dense(8, activation="relu", name="d2")(h)
  out = keras_module.layers.Dense(4, activation="softmax", name="out")(h)
  model = keras_module.Model(inputs, out)
  model.compile(optimizer=keras_module.optimizers.Adam(0.01),
                loss="sparse_categorical_crossentropy")
  model.fit(_data(seed), epochs=3, verbose=0)
  return model


def _data(seed: int = 0, n: int = 256):
  # Not reshuffled per iteration: under a strategy Keras 3's fit iterates the
  # dataset once before training (its symbolic build), which would move a
  # reshuffling dataset on to its next order (see the Pruner README).
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16)).astype(np.float32)
  y = x[:, :4].argmax(axis=1).astype(np.int64)
  return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
      n, seed=seed, reshuffle_each_iteration=False).batch(32)


def _compare(results) -> dict:
  (off_w, off_acc, off_n), (mir_w, mir_acc, mir_n) = results
  same_shapes = [a.shape for a in off_w] == [b.shape for b in mir_w]
  return {
      "replicas": [off_n, mir_n],
      "masks_equal": same_shapes and all(
          np.array_equal(a == 0, b == 0) for a, b in zip(off_w, mir_w)),
      "zeros": int(sum((a == 0).sum() for a in off_w)),
      "max_weight_diff": max(float(np.abs(a - b).max())
                             for a, b in zip(off_w, mir_w)) if same_shapes
                         else float("inf"),
      "max_kernel_diff": max(float(np.abs(a - b).max())
                             for a, b in zip(off_w, mir_w)
                             if a.ndim == 2) if same_shapes else float("inf"),
      "accuracy": [off_acc, mir_acc],
  }


def _tflite_accuracy(tflite_model: bytes, eval_ds) -> float:
  interpreter = tf.lite.Interpreter(model_content=tflite_model)
  interpreter.allocate_tensors()
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  right = total = 0
  for x, y in eval_ds.unbatch().as_numpy_iterator():
    interpreter.set_tensor(inp["index"], x[None].astype(inp["dtype"]))
    interpreter.invoke()
    right += int(interpreter.get_tensor(out["index"])[0].argmax() == y)
    total += 1
  return right / total


def _child() -> None:
  """Prunes (and QATs) each tiny model with distribution 'off' and 'mirrored'."""
  import keras  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import pruning  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.quantizer import quantization  # pylint: disable=g-import-not-at-top

  eval_ds = _data(seed=2, n=EVAL_EXAMPLES)
  runs = {}
  for kname, module in (("keras2", tf_keras), ("keras3", keras)):
    for structure in ("unstructured", "channels"):
      model = _tiny(module, conv=structure == "channels")
      results = []
      for distribution in ("off", "mirrored"):
        config = PrunerConfig(label_key="y", target_sparsity=0.5,
                              train_steps=10, frequency=2,
                              sparsity_structure=structure, finetune_steps=4,
                              distribution=distribution)
        result = pruning.prune_model(model, _data(seed=1), config,
                                     eval_ds=eval_ds)
        replicas = result.model.distribute_strategy.num_replicas_in_sync
        results.append((result.model.get_weights(),
                        result.metrics["accuracy"], replicas))
      runs[f"{kname}/{structure}"] = _compare(results)

  # QAT through quantize(), TFLite conversion included; its accuracy on the
  # TFLite model, weights of the QAT model.
  model = _tiny(tf_keras, conv=False)
  named = lambda ds: ds.map(lambda x, y: ({"x": x}, y))
  results = []
  for distribution in ("off", "mirrored"):
    config = QuantizerConfig(quantization="qat", label_key="y", qat_steps=8,
                             num_representative_samples=32,
                             distribution=distribution)
    captured = {}
    original = quantization._quantization_aware_model  # pylint: disable=protected-access
    def keep(*args, **kwargs):
      captured["model"], stats = original(*args, **kwargs)
      return captured["model"], stats
    quantization._quantization_aware_model = keep  # pylint: disable=protected-access
    try:
      result = quantization.quantize(
          model, config, representative_data=named(_data(seed=3)),
          train_data=named(_data(seed=1)).repeat(), measure_float=False)
    finally:
      quantization._quantization_aware_model = original  # pylint: disable=protected-access
    results.append((captured["model"].get_weights(), _tflite_accuracy(
        result.tflite_model, eval_ds),
                    captured["model"].distribute_strategy.num_replicas_in_sync))
  runs["keras2/qat"] = _compare(results)
  print(json.dumps(runs))


if __name__ == "__main__":
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration()] * 2)
  _child()
