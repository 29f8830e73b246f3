"""Latency: median per-example time of both models, one thread, after warm-up.

TFLite models are timed in this process (:func:`tflite_latency`); Keras models in a
fresh Python process (:func:`keras_latency`), because TensorFlow's thread pools can
be limited to one thread only before it first runs an op. That process runs this
module: ``python -m tfx_compression.components.compression_evaluator.latency
ARGS_JSON`` reads its arguments and writes its result as files.

Example:

    seconds = tflite_latency({"baseline": base, "candidate": cand}, features)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import model_io
from tfx_compression.components.compression_evaluator.predictors import (  # pylint: disable=g-multiple-import
    EvaluationError, TFLitePredictor, load_custom_objects)

# This module, as `python -m` runs it in the timing process.
MODULE = "tfx_compression.components.compression_evaluator.latency"
LATENCY_WARMUP = 10
# Examples each TFLite model runs in a row before the other takes its turn.
LATENCY_BLOCK = 20


def _rows(features: Mapping[str, np.ndarray]) -> List[Dict[str, np.ndarray]]:
  n = len(next(iter(features.values())))
  return [{k: v[i:i + 1] for k, v in features.items()} for i in range(n)]


def tflite_latency(predictors: Mapping[str, TFLitePredictor],
                   features: Mapping[str, np.ndarray],
                   warmup: int = LATENCY_WARMUP,
                   block: int = LATENCY_BLOCK) -> Dict[str, float]:
  """Median seconds of one ``invoke`` per example, for each TFLite model.

  Interpreters run with one thread; inputs are set before the clock starts.
  The models take turns every ``block`` examples, so a burst of load on a
  shared machine hits both alike, while each runs as a served model does,
  one call after another: alternating on every example made a small model
  wait on the caches the large one had just emptied (the demo's narrow int8
  model measured 8.4 us that way, 2.7 us in a row).
  """
  rows = _rows(features)
  total = warmup + len(rows)
  block = max(1, block)
  times = {role: [] for role in predictors}
  for first in range(0, total, block):
    for role, pred in predictors.items():
      for i in range(first, min(first + block, total)):
        pred.set_inputs(rows[i % len(rows)])
        start = time.perf_counter()
        pred.invoke()
        elapsed = time.perf_counter() - start
        if i >= warmup:
          times[role].append(elapsed)
  return {role: statistics.median(t) for role, t in times.items()}


def _keras_latency_worker(paths: Mapping[str, str], module_file: Optional[str],
                          features: Mapping[str, np.ndarray],
                          warmup: int) -> Dict[str, Any]:
  """Times batch-1 calls of Keras models; runs in a fresh process (see
  keras_latency), where TensorFlow can still be limited to one thread."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
  except RuntimeError as e:  # already initialized: record it, do not hide it
    logging.warning("Could not limit TensorFlow to one thread: %s", e)
  custom_objects = load_custom_objects(module_file)
  calls, inputs = {}, {}
  for role, path in paths.items():
    model = model_io.load_keras_model(path, f"{role}_model", custom_objects)
    specs = {name: tf.TensorSpec([1] + list(s.shape)[1:], s.dtype, name=name)
             for name, s in features_lib.keras_input_specs(model).items()}
    # autograph=False: converting the Keras call graph costs ~10 s on the
    # first trace in a process and changes nothing for a Keras model.
    calls[role] = tf.function(lambda x, m=model: m(x, training=False),
                              input_signature=[specs], autograph=False)
    # Tensors are made before the clock starts, as TFLite inputs are set.
    inputs[role] = [{k: tf.constant(row[k], dtype=spec.dtype)
                     for k, spec in specs.items()}
                    for row in _rows(features)]
  n = len(next(iter(inputs.values())))
  times = {role: [] for role in calls}
  for i in range(warmup + n):
    for role, call in calls.items():
      x = inputs[role][i % n]
      start = time.perf_counter()
      tf.nest.map_structure(lambda t: t.numpy(), call(x))
      elapsed = time.perf_counter() - start
      if i >= warmup:
        times[role].append(elapsed)
  return {"latency": {role: statistics.median(t) for role, t in times.items()},
          "threads": tf.config.threading.get_intra_op_parallelism_threads()}


def _latency_main(args_path: str) -> None:
  """Entry point of the latency subprocess: arguments and result as files."""
  with open(args_path) as f:
    args = json.load(f)
  with np.load(args["features"]) as data:
    features = {k: data[k] for k in data.files}
  result = _keras_latency_worker(args["paths"], args["module_file"], features,
                                 args["warmup"])
  with open(args["out"], "w") as f:
    json.dump(result, f)


def keras_latency(paths: Mapping[str, str], features: Mapping[str, np.ndarray],
                  module_file: Optional[str] = None,
                  warmup: int = LATENCY_WARMUP,
                  timeout: float = 1800) -> Tuple[Dict[str, float], int]:
  """Median seconds of one batch-1 call per example, each Keras SavedModel.

  TensorFlow's thread pools can be limited to one thread only before it first
  runs an op, which a pipeline process (or a test) has long done; so the
  models are timed in a fresh Python process (a plain subprocess, which does
  not re-import the caller's main module as multiprocessing would), taking
  turns on each example. Returns ({role: seconds}, intra-op threads).
  """
  with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
    np.savez(os.path.join(tmp, "features.npz"),
             **{k: np.asarray(v) for k, v in features.items()})
    args = {"paths": dict(paths), "module_file": module_file, "warmup": warmup,
            "features": os.path.join(tmp, "features.npz"),
            "out": os.path.join(tmp, "result.json")}
    with open(os.path.join(tmp, "args.json"), "w") as f:
      json.dump(args, f)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2",
               TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, os.path.join(tmp, "args.json")],
        env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
      raise EvaluationError(
          "Timing the Keras models in a subprocess failed (exit code "
          f"{proc.returncode}): {proc.stderr[-2000:]}")
    with open(args["out"]) as f:
      result = json.load(f)
  return result["latency"], result["threads"]


if __name__ == "__main__":
  # python -m tfx_compression.components.compression_evaluator.latency ARGS_JSON
  _latency_main(sys.argv[1])
