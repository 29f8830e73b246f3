"""Where MobileNetV2 0.35's single-thread TFLite time goes (issue #21, part A).

    .venv/bin/python -m benchmarks.real_arch_latency                  # 32, 64, 96 px
    .venv/bin/python -m benchmarks.real_arch_latency --sizes 32 --multiple 8

Part A's latency target (channels 50% + int8 at most 0.25x the dense float
TFLite model) was missed at 0.49x. This explains the miss with figures: the
same model as ``mobilenet_trainer.build_model`` (the digits' 64 pixels made
into a size x size x 3 image inside the model), briefly trained on the digits
so that BatchNormalization is not the identity, then channels 50% with the
Pruner's own ``keras2_channels.prune_channels`` (a few steps: latency depends
on the shapes, not on the weights' values), converted by the Quantizer's
``tflite_convert.convert`` with the packed input, as part A ships it.

1. Input size sweep: dense float, dense int8, ours float, ours int8 (µs, and
   ours int8 / dense float), with the MACs of each.
2. Stage breakdown: float TFLite models of the network cut after the input
   preparation (``rgb``) and after block 0, 2, 5, 9, 12, 16 and ``out_relu``:
   the time up to each cut, dense beside ours.
3. ``--multiple 8``: also ours with every layer's kept channels rounded up to
   a multiple of 8 (SIMD-friendly widths), to test whether odd widths cost.

Latency: ``measure.latencies`` (one thread, batch 1, median, models timed in
alternating rounds). Results: ``benchmarks/results/real_arch_latency.json``.
"""

# pylint: disable=g-import-not-at-top

import argparse
import json
import math
import os
import sys
from typing import Any, Dict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

CUTS = ("rgb", "expanded_conv_project_BN", "block_2_add", "block_5_add",
        "block_9_add", "block_12_add", "block_16_project_BN", "out_relu")


def _digits():
  import numpy as np
  import tensorflow as tf
  from sklearn.datasets import load_digits
  from benchmarks import measure
  from benchmarks import mobilenet_trainer as trainer
  x, y = load_digits(return_X_y=True)
  x = x.astype(np.float32)
  features = {k: x[:, i:i + 1] for i, k in enumerate(trainer.FEATURE_KEYS)}
  data = measure.EvalData(features=features, labels=y)
  ds = tf.data.Dataset.from_tensor_slices((features, y)).repeat().batch(32)
  return data, ds


def _packed_tflite(model, mode: str, data) -> bytes:
  from tfx_compression.components.common import tflite_convert, tflite_packing
  packed = tflite_packing.pack_inputs(model)
  spec = {"features": packed.features, "widths": packed.widths,
          "dtype": packed.dtype}
  samples = [{tflite_packing.PACKED_INPUT: tflite_packing.pack(
      {k: v[i:i + 1] for k, v in data.features.items()}, spec)}
             for i in range(50)] if mode == "int8" else ()
  return tflite_convert.convert(packed.model, mode, samples)


def _prune(model, ds, multiple: int = 1):
  import tf_keras as keras
  from tfx_compression.components.pruner import channel_choice
  from tfx_compression.components.pruner import keras2_channels
  keep = channel_choice._keep_count  # pylint: disable=protected-access
  if multiple > 1:
    channel_choice._keep_count = lambda w, s: min(  # pylint: disable=protected-access
        w, int(math.ceil(keep(w, s) / multiple) * multiple))
  try:
    return keras2_channels.prune_channels(
        model, ds, target_sparsity=0.5, train_steps=4, finetune_steps=2,
        loss=keras.losses.SparseCategoricalCrossentropy())
  finally:
    channel_choice._keep_count = keep  # pylint: disable=protected-access


def run(sizes, multiple: int, stages_at) -> Dict[str, Any]:
  import tf_keras as keras
  from benchmarks import measure
  from benchmarks import mobilenet_trainer as trainer
  data, ds = _digits()
  out: Dict[str, Any] = {"sizes": {}, "stages": {}}
  for size in sizes:
    dense = trainer.build_model(size=size)
    dense.fit(ds, steps_per_epoch=20, epochs=1, verbose=0)
    ours = _prune(dense, ds)
    tflite = {"dense_float": _packed_tflite(dense, "float", data),
              "dense_int8": _packed_tflite(dense, "int8", data),
              "ours_float": _packed_tflite(ours.model, "float", data),
              "ours_int8": _packed_tflite(ours.model, "int8", data)}
    macs = {"dense": ours.info["macs_before"], "ours": ours.info["macs_after"]}
    if multiple > 1:
      rounded = _prune(dense, ds, multiple)
      tflite[f"ours_x{multiple}_float"] = _packed_tflite(rounded.model, "float", data)
      tflite[f"ours_x{multiple}_int8"] = _packed_tflite(rounded.model, "int8", data)
      macs[f"ours_x{multiple}"] = rounded.info["macs_after"]
    models = {k: measure.TFLiteModel(v, k) for k, v in tflite.items()}
    lat = measure.latencies(models, data, rounds=3)
    out["sizes"][size] = {"latency_us": {k: v * 1e6 for k, v in lat.items()},
                          "macs": macs}
    print(f"[{size}px] " + ", ".join(f"{k} {v * 1e6:.1f} µs"
                                     for k, v in lat.items()),
          file=sys.stderr, flush=True)
    if size in stages_at:
      cut = {}
      for tag, model in (("dense", dense), ("ours", ours.model)):
        for name in CUTS:
          sub = keras.Model(model.inputs, keras.layers.Flatten()(
              model.get_layer(name).output))
          cut[f"{tag}/{name}"] = measure.TFLiteModel(
              _packed_tflite(sub, "float", data), f"{tag}/{name}")
      lat = measure.latencies(cut, data, rounds=2, per_round=100)
      out["stages"][size] = {k: v * 1e6 for k, v in lat.items()}
  return out


def print_tables(out: Dict[str, Any]) -> None:
  print("\n| input | MACs dense → ours | dense float µs | dense int8 µs | "
        "ours float µs | ours int8 µs | ours int8 / dense float |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for size, r in out["sizes"].items():
    lat, macs = r["latency_us"], r["macs"]
    print(f"| {size}×{size} | {macs['dense']:,} → {macs['ours']:,} | "
          f"{lat['dense_float']:.1f} | {lat['dense_int8']:.1f} | "
          f"{lat['ours_float']:.1f} | {lat['ours_int8']:.1f} | "
          f"{lat['ours_int8'] / lat['dense_float']:.2f} |")
    extra = [k for k in lat if k.startswith("ours_x")]
    if extra:
      print("|   rounded | " + ", ".join(
          f"{k} {lat[k]:.1f} µs" for k in extra) + " | | | | | |")
  for size, s in out["stages"].items():
    print(f"\nStages at {size}×{size} (float, µs up to the cut; the step from "
          "the previous cut in brackets):")
    print("| cut | dense | ours |")
    print("|---|---:|---:|")
    last = {"dense": 0.0, "ours": 0.0}
    for name in CUTS:
      d, o = s[f"dense/{name}"], s[f"ours/{name}"]
      print(f"| {name} | {d:.1f} (+{d - last['dense']:.1f}) | "
            f"{o:.1f} (+{o - last['ours']:.1f}) |")
      last = {"dense": d, "ours": o}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default="32,64,96")
  parser.add_argument("--stages-at", default="32,96",
                      help="sizes to break down by stage ('' for none)")
  parser.add_argument("--multiple", type=int, default=1)
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results",
      "real_arch_latency.json"))
  args = parser.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(",")]
  stages_at = {int(s) for s in args.stages_at.split(",") if s}
  out = run(sizes, args.multiple, stages_at)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print_tables(out)


if __name__ == "__main__":
  main()
