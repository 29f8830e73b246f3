"""Part B of the real-architecture benchmark: what each step costs on big models.

On ``tf_keras.applications`` MobileNetV2 (alpha 1.0) and ResNet50 (``weights=None``,
10 classes) with synthetic images (fixed seed), each measurement runs in a
fresh process, so that its peak memory (VmHWM, read by the process itself) is its
own:

* ``fit``: ``model.compile(Adam(1e-3), SparseCategoricalCrossentropy)`` then
  ``model.fit`` for ``warmup + steps`` steps, as a user trains;
* ``unstructured`` / ``channels``: the Pruner's own code path,
  ``pruning.prune_model`` with a ``PrunerConfig`` (target 0.5, mask updates
  every 10 steps as with the default 300 steps; channels with
  ``finetune_steps=0``, so only the masked fine-tuning of the full-width model
  is timed). Its clone, layer selection, tfmot wrappers or channel masks and
  callbacks all run as in the Pruner; ``unstructured_tfmot`` (not in the
  default kinds) is ``unstructured`` with tfmot's own mask update, the sort our
  selection replaced (``keras2_mask_select``), as the reference;
* ``convert``: int8 conversion time of the Quantizer's function
  (``tflite_convert.convert``) beside the guide's ``from_keras_model``, and the
  evaluator's prediction path (``KerasPredictor`` for the baseline,
  ``TFLitePredictor`` for the int8 candidate) in examples per second.

A step's time is read between consecutive ``on_train_batch_end`` calls (the
timing callback replaces the progress callback the Pruner's and our fit's
``progress.keras_callback`` return, so it runs last, after the masking
callbacks): the first ``warmup`` steps (tracing) are left out, the mean of the
rest is reported (mask updates included). Runs alternate (fit, unstructured,
channels, then the reverse order) so that load on a shared machine hits them
alike.
"""

# pylint: disable=g-import-not-at-top

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

FULL = dict(models=["mobilenetv2", "resnet50"], size=96, batch=16, warmup=3,
            steps=10, repeats=2, frequency=10, calibration=50,
            eval_examples=256, kinds=["fit", "unstructured", "channels"])
SMOKE = dict(models=["mobilenetv2_0.35"], size=32, batch=4, warmup=2,
             steps=3, repeats=1, frequency=2, calibration=4, eval_examples=8,
             kinds=["fit", "unstructured", "channels"])
# "unstructured_tfmot": the Pruner's unstructured path with tfmot's own mask
# update (a sort of every kernel) instead of ours (a selection, same masks).
TFMOT_UPDATE = "unstructured_tfmot"
STRUCTURE = {TFMOT_UPDATE: "unstructured"}
LABELS = {"mobilenetv2": "MobileNetV2 1.0", "mobilenetv2_0.35":
          "MobileNetV2 0.35", "resnet50": "ResNet50"}


def build(name: str, size: int):
  import tf_keras as keras
  shape = (size, size, 3)
  if name.startswith("mobilenetv2"):
    alpha = float(name.split("_")[1]) if "_" in name else 1.0
    return keras.applications.MobileNetV2(alpha=alpha, weights=None,
                                          input_shape=shape, classes=10)
  if name == "resnet50":
    return keras.applications.ResNet50(weights=None, input_shape=shape,
                                       classes=10)
  raise ValueError(f"`models` item {name!r} is not one of {sorted(LABELS)}.")


def _data(cfg, n: int):
  import numpy as np
  rng = np.random.default_rng(0)
  images = rng.random((n, cfg["size"], cfg["size"], 3), dtype=np.float32)
  labels = rng.integers(0, 10, n)
  return images, labels


def _dataset(cfg):
  import tensorflow as tf
  images, labels = _data(cfg, 4 * cfg["batch"])
  return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      cfg["batch"]).repeat()


def _peak_mib() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024.0
  return float("nan")


def _install_timer(stamps: List[List[float]]):
  """Makes progress.keras_callback return a callback that records step ends."""
  from tfx_compression.components.common import progress

  def keras_callback(reporter, keras_module=None):
    if keras_module is None:
      import tf_keras as keras_module
    fit_stamps: List[float] = []
    stamps.append(fit_stamps)

    class _Timer(keras_module.callbacks.Callback):

      def on_train_begin(self, logs=None):
        fit_stamps.append(time.perf_counter())

      def on_train_batch_end(self, batch, logs=None):
        fit_stamps.append(time.perf_counter())
        reporter.advance()

    return _Timer()

  progress.keras_callback = keras_callback
  return keras_callback


def _step_figures(stamps: List[float], warmup: int) -> Dict[str, Any]:
  steps = [b - a for a, b in zip(stamps, stamps[1:])]
  timed = steps[warmup:]
  return {"mean_s": statistics.mean(timed), "median_s": statistics.median(timed),
          "max_s": max(timed), "steps": timed, "first_s": steps[0]}


def child(kind: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
  """One measurement in this process (see the module docstring)."""
  import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
  import tf_keras as keras
  from tfx_compression.components.common import progress
  stamps: List[List[float]] = []
  timer = _install_timer(stamps)
  model = build(cfg["model"], cfg["size"])
  total = cfg["warmup"] + cfg["steps"]
  out: Dict[str, Any] = {"kind": kind, "model": cfg["model"],
                         "params": int(model.count_params())}
  if kind == "convert":
    out.update(_convert(model, cfg))
  elif kind == "fit":
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    model.fit(_dataset(cfg), steps_per_epoch=total, epochs=1, verbose=0,
              callbacks=[timer(progress.Progress("fit", total))])
  else:
    from tfx_compression.components.pruner import pruning
    from tfx_compression.components.pruner.config import PrunerConfig
    if kind == TFMOT_UPDATE:
      # The reference: tfmot's own mask update (a whole-kernel sort).
      from tfx_compression.components.pruner import keras2_mask_select
      keras2_mask_select.use_selection = lambda layers: 0
    freq = cfg["frequency"]
    config = PrunerConfig(
        label_key="label", target_sparsity=0.5,
        sparsity_structure=STRUCTURE.get(kind, kind),
        train_steps=total, end_step=(total - 1) // freq * freq,
        frequency=freq, finetune_steps=0, batch_size=cfg["batch"], seed=0)
    start = time.perf_counter()
    result = pruning.prune_model(model, _dataset(cfg), config)
    out["prune_model_s"] = time.perf_counter() - start
    out["sparsity"] = float(result.stats["sparsity"])
  if stamps:
    out.update(_step_figures(stamps[0], cfg["warmup"]))
  out["peak_mib"] = _peak_mib()
  return out


def _convert(model, cfg) -> Dict[str, Any]:
  """int8 conversion (ours and the guide's) and the evaluator's throughput."""
  import tensorflow as tf
  from tfx_compression.components.common import features, tflite_convert
  from tfx_compression.components.compression_evaluator import predictors
  name = next(iter(features.keras_input_specs(model)))
  images, _ = _data(cfg, max(cfg["calibration"], cfg["eval_examples"]))
  samples = [{name: images[i:i + 1]} for i in range(cfg["calibration"])]
  start = time.perf_counter()
  int8 = tflite_convert.convert(model, "int8", samples)
  ours_s = time.perf_counter() - start

  def representative():
    for i in range(cfg["calibration"]):
      yield [images[i:i + 1]]

  start = time.perf_counter()
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.convert()
  ref_s = time.perf_counter() - start

  n = cfg["eval_examples"]
  feats = {name: images[:n]}
  keras_pred = predictors.KerasPredictor(model, role="baseline")
  keras_pred.predict({name: images[:min(n, 64)]})  # traces
  start = time.perf_counter()
  for i in range(0, n, 64):
    keras_pred.predict({name: images[i:i + 64]})
  keras_eps = n / (time.perf_counter() - start)
  lite = predictors.TFLitePredictor(model_content=int8, role="candidate")
  lite.predict({name: images[:2]})
  start = time.perf_counter()
  lite.predict(feats)
  lite_eps = n / (time.perf_counter() - start)
  return {"convert_int8_ours_s": ours_s, "convert_int8_reference_s": ref_s,
          "int8_bytes": len(int8), "calibration_samples": cfg["calibration"],
          "evaluator_keras_examples_per_s": keras_eps,
          "evaluator_tflite_int8_examples_per_s": lite_eps,
          "eval_examples": n}


def _run_child(kind: str, cfg: Dict[str, Any]) -> Dict[str, Any]:
  start = time.perf_counter()
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.real_arch_cost", kind, json.dumps(cfg)],
      capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  if proc.returncode:
    raise RuntimeError(f"{kind} {cfg['model']} failed:\n{proc.stderr[-3000:]}")
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  result["process_s"] = time.perf_counter() - start
  print(f"[{time.strftime('%H:%M:%S')}] {cfg['model']} {kind}: "
        f"{ {k: v for k, v in result.items() if k != 'steps'} }",
        file=sys.stderr, flush=True)
  return result


def run_all(cfg: Dict[str, Any]) -> Dict[str, Any]:
  """Every model: the kinds alternating over the repeats, then 'convert'."""
  out: Dict[str, Any] = {"settings": dict(cfg), "models": {}}
  for name in cfg["models"]:
    one = dict(cfg, model=name)
    runs: Dict[str, List[Dict[str, Any]]] = {k: [] for k in cfg["kinds"]}
    errors = out.setdefault("errors", [])
    for rep in range(cfg["repeats"]):
      order = cfg["kinds"] if rep % 2 == 0 else list(reversed(cfg["kinds"]))
      for kind in order:
        try:
          runs[kind].append(_run_child(kind, one))
        except RuntimeError as e:  # Recorded; the other runs go on.
          errors.append(str(e)[-1500:])
          print(str(e)[-1500:], file=sys.stderr, flush=True)
    summary = {}
    for kind, results in runs.items():
      if not results:
        continue
      summary[kind] = {
          "step_mean_s": statistics.median(r["mean_s"] for r in results),
          "step_median_s": statistics.median(r["median_s"] for r in results),
          "peak_mib": statistics.median(r["peak_mib"] for r in results),
          "runs": results}
    fit = summary.get("fit")
    for kind in summary:
      if fit and kind != "fit":
        s = summary[kind]
        s["step_ratio"] = s["step_mean_s"] / fit["step_mean_s"]
        s["step_ratio_median"] = s["step_median_s"] / fit["step_median_s"]
        s["memory_ratio"] = s["peak_mib"] / fit["peak_mib"]
    if cfg.get("convert", True):
      try:
        summary["convert"] = _run_child("convert", one)
      except RuntimeError as e:
        errors.append(str(e)[-1500:])
    out["models"][name] = summary
  return out


def print_table(b: Dict[str, Any], targets: Dict[str, float]) -> None:
  s = b["settings"]
  print(f"\nPart B: cost, synthetic {s['size']}x{s['size']}x3, batch "
        f"{s['batch']}, {s['steps']} timed steps after {s['warmup']} warm-up, "
        f"median of {s['repeats']} alternating runs per row")
  print("| model | run | ms/step (mean) | ms/step (median) | x fit (mean) | "
        "x fit (median) | peak MiB | x fit |")
  print("|---|---|---:|---:|---:|---:|---:|---:|")
  for name, m in b["models"].items():
    for kind in s["kinds"]:
      r = m.get(kind)
      if r is None or (kind != "fit" and "step_ratio" not in r):
        continue
      ratio = (f"{r['step_ratio']:.2f} | {r['step_ratio_median']:.2f}"
               if kind != "fit" else "1.00 | 1.00")
      mem = f"{r['memory_ratio']:.2f}" if kind != "fit" else "1.00"
      print(f"| {LABELS.get(name, name)} | {kind} | {1e3 * r['step_mean_s']:.0f} "
            f"| {1e3 * r['step_median_s']:.0f} | {ratio} | {r['peak_mib']:.0f} "
            f"| {mem} |")
  print("| model | int8 conversion, ours (s) | the guide's (s) | evaluator "
        "Keras (ex/s) | evaluator int8 TFLite (ex/s) |")
  print("|---|---:|---:|---:|---:|")
  for name, m in b["models"].items():
    c = m.get("convert")
    if c is None:
      continue
    print(f"| {LABELS.get(name, name)} | {c['convert_int8_ours_s']:.1f} | "
          f"{c['convert_int8_reference_s']:.1f} | "
          f"{c['evaluator_keras_examples_per_s']:.1f} | "
          f"{c['evaluator_tflite_int8_examples_per_s']:.1f} |")
  for name, m in b["models"].items():
    for kind in s["kinds"]:
      r = m.get(kind)
      if kind == "fit" or r is None or "step_ratio" not in r:
        continue
      for key, target in (("step_ratio", targets["step_ratio"]),
                          ("memory_ratio", targets["memory_ratio"])):
        print(f"target {LABELS.get(name, name)} {kind} {key} {r[key]:.2f} "
              f"(<= {target}: {'PASS' if r[key] <= target else 'MISS'})")


if __name__ == "__main__":
  print(json.dumps(child(sys.argv[1], json.loads(sys.argv[2]))))
