"""Do zeros make a TFLite model faster? The CompressionPlanner's latency bound.

    .venv/bin/python -m benchmarks.sparse_latency

The planner skips an unstructured or M:N climb under ``objective='latency'``
when a passing candidate already takes at most ``planning.LATENCY_BOUND`` (0.8)
of its starting model's latency, on the ground that TFLite runs sparse weights
through dense kernels. This measures that ground: the demo CNN and MobileNetV2
α 0.35 (32×32, the benchmark's part A model), dense beside the same weights
with 80% of every kernel's smallest magnitudes zeroed (what the Pruner's
unstructured 80% leaves) and beside 2:4 (the two smallest of every four along
the input axis), converted by the Quantizer's ``tflite_convert.convert`` in
float and int8, timed by ``measure.latencies`` (one thread, batch 1, median,
models in alternating rounds). Latency depends on shapes and on which weights
are zero, not on trained values, so the models are not trained.

Prints µs and sparse / dense per model and mode; writes
``benchmarks/results/sparse_latency.json``.
"""

# pylint: disable=g-import-not-at-top

import argparse
import json
import os
import sys
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RESULTS = os.path.join(os.path.dirname(__file__), "results",
                       "sparse_latency.json")


def _zeroed(model, how: str):
  """A copy of ``model`` with kernel zeros as unstructured 80% or 2:4 leave."""
  import numpy as np
  import tf_keras as keras
  copy = keras.models.clone_model(model)
  copy.set_weights(model.get_weights())
  for layer in copy.layers:
    kernel = getattr(layer, "kernel", None)
    if kernel is None or getattr(layer, "depthwise_kernel", None) is not None:
      continue
    w = kernel.numpy()
    if how == "unstructured":
      cut = np.quantile(np.abs(w), 0.8)
      w = np.where(np.abs(w) > cut, w, 0.0)
    else:  # 2:4 along the input-channel axis (the second to last)
      moved = np.moveaxis(w, -2, -1)
      if moved.shape[-1] % 4:
        continue
      groups = moved.reshape(moved.shape[:-1] + (-1, 4))
      order = np.argsort(np.abs(groups), axis=-1)
      mask = np.ones_like(groups)
      np.put_along_axis(mask, order[..., :2], 0.0, axis=-1)
      w = np.moveaxis((groups * mask).reshape(moved.shape), -1, -2)
    kernel.assign(w.astype(np.float32))
  return copy


def _samples(model, n: int, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  return {t.name.split(":")[0]: rng.uniform(0, 16, (n,) + tuple(t.shape[1:]))
          .astype(np.float32) for t in model.inputs}


def run(rounds: int) -> Dict[str, Any]:
  from benchmarks import measure
  from benchmarks import mobilenet_trainer
  from tfx_compression.components.common import model_stats
  from tfx_compression.components.common import tflite_convert
  from tfx_compression.pipelines.trainers import digits_trainer
  out: Dict[str, Any] = {}
  for name, dense in (("digits_cnn", digits_trainer.build_model()),
                      ("mobilenet_v2_0.35_32px",
                       mobilenet_trainer.build_model(size=32))):
    features = _samples(dense, 300)
    data = measure.EvalData(features=features,
                            labels=features[next(iter(features))][:, 0] * 0)
    reps = [{k: v[i:i + 1] for k, v in features.items()} for i in range(50)]
    variants = {"dense": dense, "unstructured_80": _zeroed(dense, "unstructured"),
                "2:4": _zeroed(dense, "2:4")}
    sparsity = {k: model_stats.sparsity_stats(m)["sparsity"]
                for k, m in variants.items()}
    for mode in ("float", "int8"):
      models = {k: measure.TFLiteModel(tflite_convert.convert(
          m, mode, reps if mode == "int8" else ()), k)
                for k, m in variants.items()}
      lat = measure.latencies(models, data, rounds=rounds)
      row = {k: {"latency_us": v * 1e6, "ratio": v / lat["dense"],
                 "sparsity": sparsity[k]} for k, v in lat.items()}
      out[f"{name}/{mode}"] = row
      print(f"{name:24s} {mode:5s} " + "  ".join(
          f"{k} {r['latency_us']:7.2f} µs ({r['ratio']:.3f}x, "
          f"{100 * r['sparsity']:.0f}% zero)" for k, r in row.items()),
            flush=True)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=5,
                 help="alternating timing rounds (default 5)")
  p.add_argument("--output", default=RESULTS)
  args = p.parse_args(argv)
  from benchmarks import run as run_lib
  before = run_lib.machine_state()
  rows = run(args.rounds)
  result = {"machine": {"before": before, "after": run_lib.machine_state()},
            "rounds": args.rounds, "rows": rows}
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(result, f, indent=2, sort_keys=True)
  print(f"wrote {args.output}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
