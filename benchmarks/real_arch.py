"""Real architectures: MobileNetV2 through the pipeline, and the cost of each step.

    .venv/bin/python -m benchmarks.real_arch                 # parts A and B
    .venv/bin/python -m benchmarks.real_arch --part a        # MobileNetV2 0.35
    .venv/bin/python -m benchmarks.real_arch --part b        # cost, MNv2 1.0 + ResNet50
    .venv/bin/python -m benchmarks.real_arch --smoke         # tiny, plumbing only

Part A (issue #21): MobileNetV2 alpha 0.35 (``benchmarks/mobilenet_trainer.py``:
the demo's 64 digit pixels upscaled to 32x32x3 inside the model) through the
demo pipeline's ``create_pipeline`` with that Trainer module and LocalDagRunner:
Trainer -> Pruner (channels 50%) -> Quantizer (int8, ``pack_inputs=1``) ->
CompressionEvaluator -> Pusher, on the demo's CsvExampleGen split. Beside it the
hand-written reference (``real_arch_reference.py``) compresses the same trained
model by hand. Every TFLite model is measured by ``measure.py`` (accuracy on the
eval split one example at a time, raw and gzip bytes, single-thread latency).

Part B (``real_arch_cost.py``): the Pruner's fine-tuning step against a plain
``model.fit`` step, peak memory, int8 conversion time and the evaluator's
prediction throughput on MobileNetV2 alpha 1.0 and ResNet50 (synthetic data).

Results go to ``benchmarks/results/real_arch.json`` (``--out``).
"""

# pylint: disable=g-import-not-at-top

import argparse
import json
import os
import platform
import shutil
import sys
import time
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "benchmarks", "mobilenet_trainer.py")
TARGETS = {"latency_ratio": 0.25, "accuracy_drop_points": 1.0,
           "step_ratio": 1.1, "memory_ratio": 1.5}
FULL_A = dict(train_steps=1500, prune_steps=300, finetune_steps=100,
              eval_steps=10, latency_rounds=5)
SMOKE_A = dict(train_steps=20, prune_steps=6, finetune_steps=2, eval_steps=1,
               latency_rounds=1)
ROWS_A = (
    ("dense_float", "dense float TFLite, 64 inputs (evaluator's baseline)"),
    ("dense_float_packed", "dense float TFLite, one input"),
    ("ours_channels_float", "ours: channels 50% (float TFLite)"),
    ("ours_channels_int8", "ours: channels 50% + int8, one input"),
    ("ref_float", "reference: dense float (from_keras_model)"),
    ("ref_channels_float", "reference: channels by hand (float)"),
    ("ref_channels_int8", "reference: channels by hand + int8, 64 inputs"),
    ("ref_channels_int8_flat", "reference: channels by hand + int8, one input"),
)


def _log(msg: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _keras_accuracy(model, data) -> float:
  import numpy as np
  names = [t.name.split(":")[0] for t in model.inputs]
  scores = model.predict({k: data.features[k] for k in names}, batch_size=128,
                         verbose=0)
  return float(np.mean(np.argmax(scores, axis=1) == data.labels))


def part_a(cfg: Dict[str, Any], work: str, reuse: bool = False
          ) -> Dict[str, Any]:
  """MobileNetV2 0.35 through the pipeline, beside the hand-written reference.

  ``reuse``: keep the work directory, so an unchanged pipeline comes from the
  cache (to re-measure without re-training).
  """
  import tf_keras as keras
  from benchmarks import measure, ours, reference
  from benchmarks import real_arch_reference as by_hand
  from tfx_compression.components.common import model_io, tflite_convert
  from tfx_compression.components.common import tflite_packing
  if os.path.exists(work) and not reuse:
    shutil.rmtree(work)
  runner = ours.PipelineRunner(work, pipeline_name="mobilenet_benchmark")
  _log("part A: pipeline run (Trainer, Pruner channels 0.5, Quantizer int8)")
  run = runner.run(
      "mobilenet_channels_int8", module_file=MODULE,
      train_steps=cfg["train_steps"], eval_steps=cfg["eval_steps"],
      prune_steps=cfg["prune_steps"], sparsity_structure="channels",
      target_sparsity=0.5, quantization="int8", max_drop=0.01,
      pruner_kwargs={"finetune_steps": cfg["finetune_steps"]},
      quantizer_kwargs={"pack_inputs": 1})
  examples = run.uri("CsvExampleGen", "examples")
  data = measure.load_split(measure.split_files(examples, "eval"))
  train_patterns = measure.split_files(examples, "train")
  dense = model_io.load_keras_model(model_io.serving_dir(
      run.uri("Trainer", "model")))
  pruned = model_io.load_keras_model(model_io.serving_dir(
      run.uri("Pruner", "pruned_model")))
  quantized_uri = run.uri("Quantizer", "quantized_model")
  tflite = {
      "dense_float": ours.float_tflite(run.uri("Trainer", "model")),
      "dense_float_packed": tflite_convert.convert(
          tflite_packing.pack_inputs(dense).model, "float"),
      "ours_channels_float": tflite_convert.convert(pruned, "float"),
      "ours_channels_int8": ours.read_tflite(quantized_uri),
  }
  packed = {"ours_channels_int8": ours.read_tflite_io(quantized_uri).get("packed")}

  _log("part A: reference (hand-written channel pruning of the same model)")
  settings = reference.ReferenceSettings(seed=0)
  start = time.perf_counter()
  ref_model = keras.models.load_model(model_io.serving_dir(
      run.uri("Trainer", "model")), compile=False)
  ref_narrow = by_hand.prune_channels_by_hand(
      ref_model, reference.train_dataset(train_patterns, 32, 0), share=0.5,
      steps=cfg["prune_steps"] + cfg["finetune_steps"])
  ref_prune_seconds = time.perf_counter() - start
  tflite["ref_float"] = reference.convert(ref_model, "float")
  tflite["ref_channels_float"] = reference.convert(ref_narrow, "float")
  start = time.perf_counter()
  tflite["ref_channels_int8"] = reference.convert(ref_narrow, "int8",
                                                  train_patterns, settings)
  ref_convert_seconds = time.perf_counter() - start
  tflite["ref_channels_int8_flat"] = reference.convert(
      by_hand.flat_input(ref_narrow), "int8", train_patterns, settings,
      flat=True)

  _log("part A: measuring every TFLite model")
  models = {k: measure.TFLiteModel(v, k, packed=packed.get(k))
            for k, v in tflite.items()}
  results = measure.measure(models, data, rounds=cfg["latency_rounds"])
  evaluator = run.output("CompressionEvaluator", "blessing") or {}
  pruner_props = run.output("Pruner", "pruned_model") or {}
  out = {
      "rows": {k: m.to_dict() for k, m in results.items()},
      "keras_accuracy": {"dense": _keras_accuracy(dense, data),
                         "ours_channels": _keras_accuracy(pruned, data),
                         "ref_channels": _keras_accuracy(ref_narrow, data)},
      "params": {"dense": int(dense.count_params()),
                 "ours_channels": int(pruned.count_params()),
                 "ref_channels": int(ref_narrow.count_params())},
      "macs": {k: pruner_props.get(k) for k in ("macs_before", "macs_after")},
      "eval_examples": len(data),
      "blessed": evaluator.get("blessed"),
      "steps_seconds": {n: r.seconds for n, r in run.nodes.items()},
      "states": run.states(),
      "reference_seconds": {"prune_and_finetune": ref_prune_seconds,
                            "convert_int8": ref_convert_seconds},
      "settings": cfg,
  }
  base = results["dense_float_packed"]
  cand = results["ours_channels_int8"]
  out["targets"] = {
      "latency_ratio": cand.latency_us / base.latency_us,
      "latency_ratio_vs_64_inputs": (cand.latency_us
                                     / results["dense_float"].latency_us),
      "accuracy_drop_points": 100 * (out["keras_accuracy"]["dense"]
                                     - cand.accuracy),
  }
  return out


def print_part_a(a: Dict[str, Any]) -> None:
  rows = a["rows"]
  print(f"\nPart A: MobileNetV2 alpha 0.35 on the digits at 32x32x3 "
        f"({a['eval_examples']} eval examples; Keras accuracy of the dense "
        f"model {a['keras_accuracy']['dense']:.4f}, ours channels "
        f"{a['keras_accuracy']['ours_channels']:.4f}, reference "
        f"{a['keras_accuracy']['ref_channels']:.4f})")
  base = rows["dense_float_packed"]
  print("| model | accuracy | raw bytes | gzip bytes | µs | lat x |")
  print("|---|---:|---:|---:|---:|---:|")
  for key, label in ROWS_A:
    m = rows.get(key)
    if m is None:
      continue
    print(f"| {label} | {m['accuracy']:.4f} | {m['raw_bytes']:,} | "
          f"{m['gzip_bytes']:,} | {m['latency_us']:.1f} | "
          f"{m['latency_us'] / base['latency_us']:.2f} |")
  t = a["targets"]
  print(f"params: dense {a['params']['dense']:,}, ours {a['params']['ours_channels']:,}, "
        f"reference {a['params']['ref_channels']:,}; MACs {a['macs']}; "
        f"evaluator blessed: {a['blessed']}")
  print(f"target latency ours/dense float (one input) {t['latency_ratio']:.3f} "
        f"(<= {TARGETS['latency_ratio']}: "
        f"{'PASS' if t['latency_ratio'] <= TARGETS['latency_ratio'] else 'MISS'}); "
        f"vs the 64-input float {t['latency_ratio_vs_64_inputs']:.3f}")
  drop = t["accuracy_drop_points"]
  print(f"target accuracy drop {drop:+.2f} points (<= "
        f"{TARGETS['accuracy_drop_points']}: "
        f"{'PASS' if drop <= TARGETS['accuracy_drop_points'] else 'MISS'})")
  print("pipeline steps (s): " + ", ".join(
      f"{n} {s:.1f}" for n, s in a["steps_seconds"].items()))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=("a", "b", "ab"), default="ab")
  parser.add_argument("--smoke", action="store_true",
                      help="tiny steps and sizes: checks the plumbing")
  parser.add_argument("--work-dir", default=os.path.join(
      ROOT, "outputs", "real_arch"))
  parser.add_argument("--out", default=None)
  parser.add_argument("--reuse", action="store_true",
                      help="part A: keep the work directory (cached pipeline)")
  parser.add_argument("--models", default=None,
                      help="part B models, e.g. 'mobilenetv2,resnet50'")
  parser.add_argument("--size", type=int, default=None)
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--steps", type=int, default=None)
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--kinds", default=None,
                      help="part B runs, e.g. 'fit,unstructured,channels'")
  parser.add_argument("--warmup", type=int, default=None)
  parser.add_argument("--no-convert", action="store_true",
                      help="part B: skip the conversion/evaluator run")
  args = parser.parse_args(argv)
  out_path = args.out or (os.path.join(ROOT, "outputs", "real_arch_smoke.json")
                          if args.smoke else
                          os.path.join(ROOT, "benchmarks", "results",
                                       "real_arch.json"))
  result: Dict[str, Any] = {
      "mode": "smoke" if args.smoke else "full",
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "load_average_start": os.getloadavg()},
      "command": " ".join(sys.argv)}
  if "a" in args.part:
    cfg = dict(SMOKE_A if args.smoke else FULL_A)
    result["part_a"] = part_a(cfg, os.path.join(args.work_dir, "part_a"),
                               args.reuse)
    print_part_a(result["part_a"])
  if "b" in args.part:
    from benchmarks import real_arch_cost as cost
    b_cfg = dict(cost.SMOKE if args.smoke else cost.FULL)
    for key in ("models", "size", "batch", "steps", "repeats", "kinds",
                "warmup"):
      value = getattr(args, key)
      if value is not None:
        b_cfg[key] = value.split(",") if key in ("models", "kinds") else value
    b_cfg["convert"] = not args.no_convert
    result["part_b"] = cost.run_all(b_cfg)
    cost.print_table(result["part_b"], TARGETS)
  result["machine"]["load_average_end"] = os.getloadavg()
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  if os.path.exists(out_path):
    # One part at a time: keep the other part's last figures.
    with open(out_path) as f:
      previous = json.load(f)
    for part in ("part_a", "part_b"):
      if part in previous and part not in result:
        result[part] = previous[part]
        result[f"{part}_run"] = previous.get(f"{part}_run", {
            "machine": previous.get("machine"),
            "command": previous.get("command")})
  for part in ("part_a", "part_b"):
    if part in result and f"{part}_run" not in result:
      result[f"{part}_run"] = {"machine": result["machine"],
                               "command": result["command"]}
  with open(out_path, "w") as f:
    json.dump(result, f, indent=1, default=str)
  print(f"\nwritten: {out_path}; load average at start "
        f"{result['machine']['load_average_start']}, at end "
        f"{result['machine']['load_average_end']}")


if __name__ == "__main__":
  main()
