"""The plan chosen automatically against one fixed Pruner + Quantizer run (#20).

    .venv/bin/python -m benchmarks.plan_search                    # the defaults
    .venv/bin/python -m benchmarks.plan_search --search-steps 100 --modes int8

The demo CNN (``tests/fixtures.train_digits_model``: the digits Trainer's
architecture, ``--train-steps`` steps) is compressed twice in the same process,
on the same data (first two thirds of sklearn's digits to fine-tune, the last
599 examples to measure), through the same pure functions the components call:

* **fixed** (the hand-written reference from the Pruner README): channels 0.75
  (300 masking + 100 fine-tuning steps, ``prune_model``) then int8 with one
  packed input (``quantize``), scored as TFLite;
* **plan**: ``planning.search_plan`` with ``max_drop`` (default 0.005) and the
  planner's defaults (every structure, 0.5..0.9, int8/float16/dynamic/none,
  objective size).

Printed: raw TFLite bytes against the float TFLite of the unpruned model
(target: the plan at least 60x smaller), accuracy, and the wall time ratio
plan / fixed (target: at most 4x). ``--front`` writes the plan's Pareto plots
(the evaluator's SVG) there.
"""

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from tests import fixtures
from tfx_compression.components.common import evaluation_report
from tfx_compression.components.compression_evaluator import predictors
from tfx_compression.components.compression_evaluator import report_plots
from tfx_compression.components.compression_planner import config as planner_config
from tfx_compression.components.compression_planner import planning
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner.config import PrunerConfig
from tfx_compression.components.quantizer import quantization
from tfx_compression.components.quantizer.config import QuantizerConfig


def _data(seed: int):
  x, y = fixtures.digits_arrays()
  n = 2 * len(y) // 3
  feats = lambda a: {k: a[:, i:i + 1].astype(np.float32)
                     for i, k in enumerate(fixtures.FEATURES)}
  train = tf.data.Dataset.from_tensor_slices((feats(x[:n]), y[:n])).shuffle(
      2048, seed=seed).repeat().batch(32)
  evaluation = tf.data.Dataset.from_tensor_slices(
      (feats(x[n:]), y[n:])).batch(32)
  return train, evaluation


def fixed_run(model, train, evaluation, seed: int):
  """Channels 0.75 then int8 with one packed input, as the README's best."""
  start = time.perf_counter()
  pruned = pruning.prune_model(model, train, PrunerConfig(
      sparsity_structure="channels", target_sparsity=0.75, train_steps=300,
      seed=seed), eval_ds=evaluation)
  result = quantization.quantize(
      pruned.model, QuantizerConfig(quantization="int8", pack_inputs=1,
                                    seed=seed),
      representative_data=list(train.take(7)), measure_float=False)
  seconds = time.perf_counter() - start
  pred = predictors.TFLitePredictor(model_content=result.tflite_model,
                                    io=result.io)
  metrics, _ = planning.metrics_of(pred.predict, evaluation, "probabilities")
  return dict(seconds=seconds, tflite_bytes=len(result.tflite_model),
              accuracy=metrics["accuracy"],
              keras_accuracy=pruned.metrics.get("accuracy"))


def write_front(plan, gate, directory: str) -> None:
  """The evaluator's Pareto plots of the plan, as SVG (and PNG if ImageMagick
  can convert them)."""
  report = evaluation_report.EvaluationReport(
      blessed=True, verdict="", thresholds=gate, checks=(), metrics={},
      examples=evaluation_report.Examples(), sizes=evaluation_report.Sizes(),
      latency=evaluation_report.Latency(),
      sparsity=evaluation_report.Sparsity(), plan=plan)
  os.makedirs(directory, exist_ok=True)
  for svg, label in report_plots.plan_svgs(report):
    path = os.path.join(directory, f"plan_front_{label}.svg")
    with open(path, "w") as f:
      f.write(svg)
    if shutil.which("convert"):
      os.system(f"convert -density 144 {path} {path[:-4]}.png")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--train-steps", type=int, default=600)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-drop", type=float, default=0.005)
  p.add_argument("--search-steps", type=int, default=150)
  p.add_argument("--structures", default=None)
  p.add_argument("--sparsities", default=None)
  p.add_argument("--modes", default=None)
  p.add_argument("--objective", default="size")
  p.add_argument("--front", default=None,
                 help="directory to write the plan's Pareto plots in")
  args = p.parse_args()

  model = fixtures.train_digits_model(steps=args.train_steps, seed=args.seed)
  train, evaluation = _data(args.seed)
  fixed = fixed_run(model, train, evaluation, args.seed)
  print(json.dumps(dict(run="fixed", **fixed)), flush=True)

  params = dict(label_key="label", max_drop=args.max_drop, seed=args.seed,
                search_steps=args.search_steps, objective=args.objective)
  for key, value in (("structures", args.structures),
                     ("sparsities", args.sparsities),
                     ("quantization_modes", args.modes)):
    if value is not None:
      params[key] = value
  config = planner_config.PlannerConfig(**params)
  work = tempfile.mkdtemp(prefix="plan-bench-")

  def export(result, path):
    result.model.save(path, save_format="tf", include_optimizer=False)

  start = time.perf_counter()
  plan = planning.search_plan(model, train, evaluation, config,
                              loss="sparse_categorical_crossentropy",
                              work_dir=work, export_fn=export)
  seconds = time.perf_counter() - start
  shutil.rmtree(work, ignore_errors=True)
  chosen = plan.chosen
  float_bytes = plan.baseline["float_tflite_bytes"]
  for c in plan.candidates:
    print(json.dumps(dataclasses.asdict(c), default=str), flush=True)
  summary = dict(
      run="plan", seconds=round(seconds, 1),
      fixed_seconds=round(fixed["seconds"], 1),
      wall_ratio=round(seconds / fixed["seconds"], 2),
      float_tflite_bytes=float_bytes,
      chosen=f"{chosen.structure} {chosen.sparsity:g} {chosen.mode}"
             f"{' packed' if chosen.packed else ''}",
      chosen_bytes=chosen.raw_bytes,
      chosen_x_smaller=round(float_bytes / chosen.raw_bytes, 1),
      chosen_accuracy=chosen.metric, baseline_accuracy=plan.baseline["metric"],
      fixed_bytes=fixed["tflite_bytes"],
      fixed_x_smaller=round(float_bytes / fixed["tflite_bytes"], 1),
      fixed_accuracy=fixed["accuracy"], candidates=len(plan.candidates),
      steps=[(s.structure, s.sparsity, round(s.metric, 4), s.passed)
             for s in plan.steps],
      skipped=[s["structure"] for s in plan.skipped])
  print(json.dumps(summary), flush=True)
  print(f"plan: {summary['chosen']}, {chosen.raw_bytes:,} bytes, "
        f"{summary['chosen_x_smaller']}x smaller than float TFLite "
        f"({float_bytes:,}) [target >= 60x: "
        f"{'PASS' if summary['chosen_x_smaller'] >= 60 else 'MISS'}], "
        f"accuracy {chosen.metric:.4f} (baseline "
        f"{plan.baseline['metric']:.4f}); wall {seconds:.0f} s = "
        f"{summary['wall_ratio']}x the fixed run's {fixed['seconds']:.0f} s "
        f"[target <= 4x: {'PASS' if summary['wall_ratio'] <= 4 else 'MISS'}]")
  if args.front:
    write_front(plan.to_dict(), config.gate(), args.front)


if __name__ == "__main__":
  main()
