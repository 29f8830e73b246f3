"""Peak memory of the CompressionEvaluator on 10,000 and 100,000 eval examples.

The digits eval split is replicated with small noise (each pixel moves by one
grey level with probability 0.1, clipped to 0..16) into gzip TFRecords, and the
evaluator's executor runs on it in a fresh process per size, with the demo
pipeline's Beam options. The child reports its own peak resident set size
(VmHWM), and the parent samples the summed RSS of the child and its descendants
(TFX's Beam executor builds a package in a subprocess); each size is measured
alone, TensorFlow's start-up included.

    python -m benchmarks.evaluator_memory --baseline-uri ... \\
        --candidate-uri ... --schema-uri ... --examples-uri ... \\
        --work-dir /tmp/w --out /tmp/mem.json          # one size
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Dict, Optional, Sequence

NOISE_PROBABILITY = 0.1
BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def replicate_eval_split(source_patterns: Sequence[str], out_uri: str, n: int,
                         seed: int = 0) -> str:
  """Writes ``n`` noisy copies of the source examples as <out_uri>/Split-eval.

  Returns:
    ``out_uri`` (an Examples artifact directory with one 'eval' split).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from benchmarks import measure  # pylint: disable=g-import-not-at-top
  data = measure.load_split(source_patterns)
  keys = measure.FEATURE_KEYS
  pixels = np.concatenate([data.features[k] for k in keys], axis=1)
  pixels = pixels.astype(np.int64)
  rng = np.random.default_rng(seed)
  split_dir = os.path.join(out_uri, "Split-eval")
  os.makedirs(split_dir, exist_ok=True)
  path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
  with tf.io.TFRecordWriter(path, options="GZIP") as writer:
    for i in range(n):
      j = i % len(data)
      row = pixels[j]
      if i >= len(data):  # the first copy is the original split
        move = rng.random(row.shape) < NOISE_PROBABILITY
        row = np.clip(row + move * rng.choice([-1, 1], size=row.shape), 0, 16)
      feats = {k: tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(v)]))
               for k, v in zip(keys, row)}
      feats[measure.LABEL_KEY] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=[int(data.labels[j])]))
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=feats)).SerializeToString())
  return out_uri


def _artifact(kind, uri: str, split_names: Optional[Sequence[str]] = None):
  art = kind()
  art.uri = uri
  if split_names is not None:
    from tfx.types import artifact_utils  # pylint: disable=g-import-not-at-top
    art.split_names = artifact_utils.encode_split_names(list(split_names))
  return art


def run_evaluator(baseline_uri: str, candidate_uri: str, schema_uri: str,
                  examples_uri: str, work_dir: str) -> Dict[str, Any]:
  """Runs the CompressionEvaluator's executor once; returns what it wrote."""
  # pylint: disable=g-import-not-at-top
  import tfx_compression  # noqa: F401
  from tfx_compression.components.compression_evaluator import executor as executor_lib
  from tfx.dsl.components.base import base_beam_executor
  from tfx.types import standard_artifacts
  # pylint: enable=g-import-not-at-top
  inputs = {
      "baseline_model": [_artifact(standard_artifacts.Model, baseline_uri)],
      "candidate_model": [_artifact(standard_artifacts.Model, candidate_uri)],
      "examples": [_artifact(standard_artifacts.Examples, examples_uri,
                             ["eval"])],
      "schema": [_artifact(standard_artifacts.Schema, schema_uri)],
  }
  blessing = _artifact(standard_artifacts.ModelBlessing,
                       os.path.join(work_dir, "blessing"))
  evaluation = _artifact(standard_artifacts.ModelEvaluation,
                         os.path.join(work_dir, "evaluation"))
  outputs = {"blessing": [blessing], "evaluation": [evaluation]}
  params = {"label_key": "label", "metric": "accuracy", "max_drop": 0.01}
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=BEAM_ARGS, tmp_dir=os.path.join(work_dir, "tmp"),
      unique_id="benchmark")
  executor_lib.Executor(context).Do(inputs, outputs, params)
  props = {}
  for key, value in evaluation.mlmd_artifact.custom_properties.items():
    kind = value.WhichOneof("value")
    props[key] = getattr(value, kind) if kind else None
  return props


def peak_rss_bytes() -> int:
  """Peak resident set size of this process since it started (exec).

  Read from /proc/self/status (VmHWM): ``getrusage``'s ru_maxrss keeps the
  parent's high-water mark across fork and exec, so a child started by a big
  process would report the parent's size.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_and_poll(cmd: Sequence[str], cwd: str, interval: float = 0.05):
  """Runs ``cmd``; returns (returncode, stdout, stderr, peak RSS of its tree).

  The tree's RSS (the process and every descendant, e.g. the package build
  TFX's Beam executors start) is sampled every ``interval`` seconds.
  """
  import psutil  # pylint: disable=g-import-not-at-top
  proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  peak = 0
  watched = psutil.Process(proc.pid)
  while proc.poll() is None:
    try:
      tree = [watched] + watched.children(recursive=True)
      total = 0
      for p in tree:
        try:
          total += p.memory_info().rss
        except psutil.Error:
          pass
      peak = max(peak, total)
    except psutil.Error:
      pass
    time.sleep(interval)
  stdout, stderr = proc.communicate()
  return proc.returncode, stdout, stderr, peak


def measure_sizes(sizes: Sequence[int], source_patterns: Sequence[str],
                  baseline_uri: str, candidate_uri: str, schema_uri: str,
                  work_dir: str) -> Dict[str, Any]:
  """Peak RSS and wall time of the evaluator at each size, one process each."""
  results = {}
  for n in sizes:
    examples_uri = replicate_eval_split(
        source_patterns, os.path.join(work_dir, f"examples_{n}"), n)
    out = os.path.join(work_dir, f"memory_{n}.json")
    cmd = [sys.executable, "-m", "benchmarks.evaluator_memory",
           "--baseline-uri", baseline_uri, "--candidate-uri", candidate_uri,
           "--schema-uri", schema_uri, "--examples-uri", examples_uri,
           "--work-dir", os.path.join(work_dir, f"eval_{n}"), "--out", out]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    returncode, _, stderr, tree_peak = _run_and_poll(cmd, root)
    if returncode != 0:
      raise RuntimeError(f"The evaluator on {n} examples failed:\n"
                         f"{stderr[-3000:]}")
    with open(out) as f:
      results[str(n)] = json.load(f)
    results[str(n)]["peak_tree_rss_bytes"] = tree_peak
  return results


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  for name in ("baseline-uri", "candidate-uri", "schema-uri", "examples-uri",
               "work-dir", "out"):
    p.add_argument(f"--{name}", required=True)
  args = p.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.makedirs(args.work_dir, exist_ok=True)
  start = time.perf_counter()
  props = run_evaluator(args.baseline_uri, args.candidate_uri, args.schema_uri,
                        args.examples_uri, args.work_dir)
  seconds = time.perf_counter() - start
  result = {"peak_rss_bytes": peak_rss_bytes(), "seconds": seconds,
            "examples": props.get("examples_count"),
            "candidate_accuracy": props.get("candidate_accuracy"),
            "baseline_accuracy": props.get("baseline_accuracy")}
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
