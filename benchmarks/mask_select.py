"""One unstructured mask update's threshold: tfmot's sort against our selection.

    .venv/bin/python -m benchmarks.mask_select            # ResNet50's kernels
    .venv/bin/python -m benchmarks.mask_select --model mobilenetv2

tfmot's ``Pruning._update_mask`` finds each kernel's k-th largest magnitude with
``tf.math.top_k`` over the whole kernel; ``keras2_mask_select.kth_largest``
finds the same value by radix selection. Both run here as one compiled
function over every Conv/Dense kernel of a ``tf_keras.applications`` model
(``weights=None``, 96x96 input, 10 classes) at sparsity 0.5, side by side in
the same process: median seconds of 5 calls after a warm-up, and a check that
the thresholds are equal. (The whole Pruner step, with and without our update,
is part B of ``real_arch.py``: kinds ``unstructured`` and
``unstructured_tfmot``.)

``--memory``: the memory of the whole update, tfmot's ``Pruning._update_mask``
against ``SelectPruning._update_mask``, each in a fresh process: one
``tf.function`` of the update of every kernel at sparsity 0.8, VmRSS before
tracing, after tracing, and the peak (VmHWM) after four calls.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _status_mib(field: str) -> int:
  with open("/proc/self/status") as f:
    return int(f.read().split(field + ":")[1].split()[0]) // 1024


def _kernels(model_name: str):
  """Every Conv/Dense kernel of a ``tf_keras.applications`` model (96x96)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  build = {"resnet50": tf_keras.applications.ResNet50,
           "mobilenetv2": tf_keras.applications.MobileNetV2}[model_name]
  model = build(weights=None, input_shape=(96, 96, 3), classes=10)
  return [w for w in model.weights
          if w.name.split("/")[-1].startswith(("kernel", "depthwise_kernel"))]


def _memory_child(model_name: str, which: str) -> None:
  """Prints 'before traced peak' MiB of one update path (a fresh process)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl  # pylint: disable=g-import-not-at-top
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import keras2_mask_select  # pylint: disable=g-import-not-at-top
  kernels = [tf.Variable(w) for w in _kernels(model_name)]
  step = tf.Variable(0)
  cls = (keras2_mask_select.SelectPruning if which == "ours"
         else pruning_impl.Pruning)
  updates = [cls(training_step_fn=lambda: step, pruning_vars=[],
                 pruning_schedule=pruning_schedule.ConstantSparsity(0.8, 0),
                 block_size=(1, 1), block_pooling_type="AVG")
             for _ in kernels]

  @tf.function
  def update():
    return [u._update_mask(k)[0] for u, k in zip(updates, kernels)]  # pylint: disable=protected-access

  before = _status_mib("VmRSS")
  update.get_concrete_function()
  traced = _status_mib("VmRSS")
  for _ in range(4):
    update()
  print(before, traced, _status_mib("VmHWM"))


def _memory(model_name: str) -> None:
  print(f"{model_name}: the whole mask update of every kernel, fresh process "
        "each (MiB)")
  print(f"  {'update':12s} {'traced':>8s} {'peak':>8s}")
  for name, which in (("tfmot", "tfmot"), ("ours", "ours")):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.mask_select", "--model", model_name,
         "--memory-child", which], capture_output=True, text=True, check=True)
    before, traced, peak = (int(v) for v in out.stdout.split()[-3:])
    print(f"  {name:12s} {traced - before:+8d} {peak - before:+8d}")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", choices=("resnet50", "mobilenetv2"),
                      default="resnet50")
  parser.add_argument("--calls", type=int, default=5)
  parser.add_argument("--memory", action="store_true",
                      help="the update's memory instead of its time")
  parser.add_argument("--memory-child", choices=("tfmot", "ours"),
                      help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.memory_child:
    _memory_child(args.model, args.memory_child)
    return
  if args.memory:
    _memory(args.model)
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.pruner import keras2_mask_select  # pylint: disable=g-import-not-at-top
  kernels = _kernels(args.model)

  def k_of(w):
    return tf.cast(tf.maximum(tf.round(tf.cast(tf.size(w), tf.float32) * 0.5),
                              1), tf.int32)

  @tf.function
  def by_sort():
    out = []
    for w in kernels:
      magnitudes = tf.reshape(tf.abs(w), [-1])
      values, _ = tf.math.top_k(magnitudes, k=tf.size(magnitudes))
      out.append(tf.gather(values, k_of(w) - 1))
    return out

  @tf.function
  def by_selection():
    return [keras2_mask_select.kth_largest(tf.abs(w), k_of(w))
            for w in kernels]

  times = {}
  for name, fn in (("tfmot top_k", by_sort), ("selection", by_selection)):
    fn()
    runs = []
    for _ in range(args.calls):
      start = time.perf_counter()
      fn()
      runs.append(time.perf_counter() - start)
    times[name] = statistics.median(runs)
  equal = all(float(a) == float(b) for a, b in zip(by_sort(), by_selection()))
  weights = sum(int(tf.size(w)) for w in kernels)
  print(f"{args.model}: {len(kernels)} kernels, {weights:,} weights, "
        f"sparsity 0.5")
  for name, seconds in times.items():
    print(f"  {name:12s} {1e3 * seconds:8.1f} ms per update")
  print(f"  speed-up {times['tfmot top_k'] / times['selection']:.1f}x; "
        f"thresholds equal: {equal}")


if __name__ == "__main__":
  main()
