"""The Pruner's two backends side by side: tf_keras + tfmot against Keras 3 masks.

    .venv/bin/python -m benchmarks.keras3_vs_tfkeras            # 300 steps, 80%
    .venv/bin/python -m benchmarks.keras3_vs_tfkeras --steps 60 # quicker
    .venv/bin/python -m benchmarks.keras3_vs_tfkeras --structure channels --sparsity 0.75

The demo CNN (``pipelines/trainers/digits_trainer.py``'s architecture: 64 named
pixel inputs, Conv2D 32, Conv2D 64, MaxPool, Dense 256, Dense 10) on
``sklearn.datasets.load_digits`` (1437 train / 360 test examples, fixed split).
The baseline is trained once, in tf_keras, and its weights are copied into the
Keras 3 model, so both sides prune the very same weights on the same data
order with the same settings (unstructured, 80%, polynomial schedule, Adam
1e-3, seed 0). Each side runs in its own process (tfmot's import switches
``tf.keras`` to tf_keras; timings must not share warm-up), ``--repeats`` times,
alternating; the wall time is that of ``prune_model`` alone (clone, baseline
evaluation, fine-tuning, evaluation), the median is reported.

Issue #19's target: Keras 3 wall time at most 1.2x tf_keras', accuracy within
0.5 points.
"""

# pylint: disable=g-import-not-at-top

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SEED = 0
BATCH = 64
FEATURES = [f"pixel_{i:02d}" for i in range(64)]


def _data():
  import numpy as np
  from sklearn import datasets
  digits = datasets.load_digits()
  x = digits.data.astype(np.float32)
  y = digits.target.astype(np.int64)
  order = np.random.default_rng(SEED).permutation(len(x))
  x, y = x[order], y[order]
  cut = int(0.8 * len(x))
  return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def _dataset(x, y, shuffle: bool):
  import tensorflow as tf
  features = {k: x[:, i:i + 1] for i, k in enumerate(FEATURES)}
  ds = tf.data.Dataset.from_tensor_slices((features, y))
  if shuffle:
    ds = ds.shuffle(len(y), seed=SEED)
  return ds.batch(BATCH)


def _build(keras):
  """digits_trainer.build_model, for either Keras."""
  inputs = {k: keras.Input(shape=(1,), name=k, dtype="float32")
            for k in FEATURES}
  x = keras.layers.Concatenate(name="pixels")(list(inputs.values()))
  x = keras.layers.Rescaling(1.0 / 16.0, name="scale")(x)
  x = keras.layers.Reshape((8, 8, 1), name="image")(x)
  x = keras.layers.Conv2D(32, 3, padding="same", activation="relu",
                          name="conv1")(x)
  x = keras.layers.Conv2D(64, 3, padding="same", activation="relu",
                          name="conv2")(x)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = keras.layers.Dense(256, activation="relu", name="dense1")(x)
  outputs = keras.layers.Dense(10, activation="softmax",
                               name="probabilities")(x)
  model = keras.Model(inputs=inputs, outputs=outputs, name="digits_cnn")
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(
                    name="accuracy")])
  return model


def train_baseline(path: str, steps: int) -> None:
  """Trains the CNN in tf_keras and writes its weights (by layer) to ``path``."""
  import numpy as np
  import tf_keras
  import tensorflow as tf
  tf_keras.utils.set_random_seed(SEED)
  tf.config.experimental.enable_op_determinism()
  (x, y), _ = _data()
  model = _build(tf_keras)
  model.fit(_dataset(x, y, True).repeat(), steps_per_epoch=steps, epochs=1,
            verbose=0)
  np.savez(path, **{f"{l.name}.{i}": w for l in model.layers
                    for i, w in enumerate(l.get_weights())})


def _load_weights(model, path: str) -> None:
  import numpy as np
  saved = np.load(path)
  for layer in model.layers:
    n = len(layer.get_weights())
    if n:
      layer.set_weights([saved[f"{layer.name}.{i}"] for i in range(n)])


def run_side(side: str, weights: str, steps: int, sparsity: float,
             out: str = "", structure: str = "unstructured") -> dict:
  """Prunes the baseline with one backend; returns its figures.

  With ``out``, the pruned weights are written there (by layer).
  """
  from tfx_compression.components.pruner.config import PrunerConfig
  if side == "tf_keras":
    from tfx_compression.components.pruner import pruning as backend
    import tf_keras as keras
  else:
    from tfx_compression.components.pruner import keras3_magnitude as backend
    import keras
  (x, y), (xt, yt) = _data()
  model = _build(keras)
  _load_weights(model, weights)
  config = PrunerConfig(label_key="label", target_sparsity=sparsity,
                        sparsity_structure=structure, train_steps=steps,
                        batch_size=BATCH, seed=SEED)
  start = time.perf_counter()
  result = backend.prune_model(model, _dataset(x, y, True), config,
                               eval_ds=_dataset(xt, yt, False))
  seconds = time.perf_counter() - start
  int8 = _int8_figures(result.model, x, xt, yt)
  if out:
    import numpy as np
    np.savez(out, **{f"{l.name}.{i}": w for l in result.model.layers
                     for i, w in enumerate(l.get_weights())})
  return {"side": side, "seconds": seconds,
          "accuracy": result.metrics["accuracy"],
          "baseline_accuracy": result.baseline_metrics["accuracy"],
          "sparsity": result.stats["sparsity"],
          "gzip_weight_bytes": result.stats["gzip_weight_bytes"],
          "param_count": result.stats["param_count"],
          "int8_accuracy": int8["accuracy"], "int8_bytes": int8["bytes"],
          "keras": keras.__version__}


def _int8_figures(model, x, xt, yt) -> dict:
  """The pruned model as the Quantizer's int8 TFLite (float I/O): size, accuracy.

  Calibrated on the first 100 training examples, run one example at a time
  in the project's TFLite runtime, as the CompressionEvaluator runs it.
  """
  import numpy as np
  from tfx_compression.components.common import tflite_convert
  from tfx_compression.components.common import tflite_runtime
  samples = [{k: x[i:i + 1, j:j + 1] for j, k in enumerate(FEATURES)}
             for i in range(100)]
  flatbuffer = tflite_convert.convert(model, "int8", samples)
  interpreter = tflite_runtime.make_interpreter(model_content=flatbuffer,
                                                num_threads=1)
  runner = interpreter.get_signature_runner()
  hits = 0
  for i in range(len(yt)):
    out = runner(**{k: xt[i:i + 1, j:j + 1] for j, k in enumerate(FEATURES)})
    hits += int(np.argmax(next(iter(out.values()))) == yt[i])
  return {"accuracy": hits / len(yt), "bytes": len(flatbuffer)}


def _child(side, weights, steps, sparsity, out, structure) -> dict:
  out = subprocess.run(
      [sys.executable, "-m", "benchmarks.keras3_vs_tfkeras", "--side", side,
       "--weights", weights, "--steps", str(steps), "--sparsity",
       str(sparsity), "--out", out, "--structure", structure], check=True,
      capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  return json.loads(out.stdout.strip().splitlines()[-1])


def _weight_difference(a_path: str, b_path: str) -> dict:
  import numpy as np
  a, b = np.load(a_path), np.load(b_path)
  max_abs, mismatches, size = 0.0, 0, 0
  for key in a.files:
    x, y = a[key], b[key]
    if x.shape != y.shape:  # Channels: different widths kept.
      return {"max_abs": float("nan"), "mask_mismatches": -1, "size": 0}
    max_abs = max(max_abs, float(np.abs(x - y).max()))
    mismatches += int(((x == 0) != (y == 0)).sum())
    size += x.size
  return {"max_abs": max_abs, "mask_mismatches": mismatches, "size": size}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=300,
                      help="pruning fine-tuning steps (default 300)")
  parser.add_argument("--baseline-steps", type=int, default=300)
  parser.add_argument("--sparsity", type=float, default=0.8)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--structure", default="unstructured",
                      help="'unstructured', 'channels' or M:N (default "
                      "unstructured)")
  parser.add_argument("--side", choices=("tf_keras", "keras3"),
                      help=argparse.SUPPRESS)
  parser.add_argument("--weights", help=argparse.SUPPRESS)
  parser.add_argument("--out", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.side:
    print(json.dumps(run_side(args.side, args.weights, args.steps,
                              args.sparsity, args.out, args.structure)))
    return
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "baseline.npz")
    subprocess.run([sys.executable, "-c",
                    "from benchmarks.keras3_vs_tfkeras import train_baseline;"
                    f"train_baseline({weights!r}, {args.baseline_steps})"],
                   check=True, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    runs = {"tf_keras": [], "keras3": []}
    for _ in range(args.repeats):
      for side in runs:
        runs[side].append(_child(side, weights, args.steps, args.sparsity,
                                 os.path.join(tmp, f"{side}.npz"),
                                 args.structure))
    diff = _weight_difference(os.path.join(tmp, "tf_keras.npz"),
                              os.path.join(tmp, "keras3.npz"))
  rows = {}
  for side, results in runs.items():
    rows[side] = dict(results[0], seconds=statistics.median(
        r["seconds"] for r in results), all_seconds=[
            round(r["seconds"], 2) for r in results])
  a, b = rows["tf_keras"], rows["keras3"]
  print(f"digits CNN, {args.structure} {args.sparsity:.0%}, {args.steps} steps, "
        f"median of {args.repeats} runs each")
  print(f"{'':22}{'tf_keras + tfmot':>18}{'Keras 3 masks':>18}")
  print(f"{'keras version':22}{a['keras']:>18}{b['keras']:>18}")
  for key, fmt in (("baseline_accuracy", "{:.4f}"), ("accuracy", "{:.4f}"),
                   ("sparsity", "{:.4f}"), ("param_count", "{:d}"),
                   ("gzip_weight_bytes", "{:d}"),
                   ("int8_accuracy", "{:.4f}"), ("int8_bytes", "{:d}"),
                   ("seconds", "{:.2f}")):
    print(f"{key:22}{fmt.format(a[key]):>18}{fmt.format(b[key]):>18}")
  ratio = b["seconds"] / a["seconds"]
  gap = 100 * (b["accuracy"] - a["accuracy"])
  print(f"wall time ratio Keras 3 / tf_keras: {ratio:.2f} (target <= 1.2: "
        f"{'PASS' if ratio <= 1.2 else 'MISS'}); all runs {a['all_seconds']} "
        f"vs {b['all_seconds']}")
  print(f"pruned weights: max |tf_keras - Keras 3| = {diff['max_abs']:.3g}; "
        f"zero patterns differ in {diff['mask_mismatches']} of "
        f"{diff['size']} weights")
  print(f"accuracy gap: {gap:+.2f} points (target within 0.5: "
        f"{'PASS' if abs(gap) <= 0.5 else 'MISS'})")
  gap8 = 100 * (b["int8_accuracy"] - a["int8_accuracy"])
  size = b["int8_bytes"] / a["int8_bytes"]
  print(f"int8 TFLite: accuracy gap {gap8:+.2f} points (target within 0.5: "
        f"{'PASS' if abs(gap8) <= 0.5 else 'MISS'}), size Keras 3 / tf_keras "
        f"{size:.3f}")


if __name__ == "__main__":
  main()
