"""End to end: the demo pipeline with LocalDagRunner, as `make demo` runs it.

One output directory is shared by the runs in order: a full run, an identical re-run
(everything cached), and a run whose gate cannot be met (nothing new is pushed).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tfx_compression.pipelines import summary

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--train-steps", "300", "--prune-steps", "150"]
NODES = {"CsvExampleGen", "StatisticsGen", "SchemaGen", "Trainer", "Pruner",
         "Quantizer", "CompressionEvaluator", "Pusher"}


def run_demo(out, *extra):
  cmd = [sys.executable, "-m", "tfx_compression.pipelines.local_runner", "--output-dir", str(out),
         *FAST, *extra]
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def first_run(demo_dir):
  proc = run_demo(demo_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  info = summary.collect(str(demo_dir / "metadata.sqlite"), "digits_compression",
                         str(demo_dir / "serving_model"))
  return proc, info


def test_every_step_ran_and_the_table_is_printed(first_run):
  proc, info = first_run
  assert set(info["executions"]) == NODES
  assert set(info["executions"].values()) == {"COMPLETE"}
  assert "baseline (Trainer)" in proc.stdout and "compressed" in proc.stdout
  assert "compression report:" in proc.stdout


def test_compressed_model_is_pushed_and_runs(first_run):
  _, info = first_run
  assert info["blessing"]["blessed"] == 1
  assert info["pushed"]["pushed"] == 1
  dest = info["pushed"]["pushed_destination"]
  tflite = os.path.join(dest, "model.tflite")
  assert os.path.isfile(tflite)
  import tensorflow as tf
  interp = tf.lite.Interpreter(model_path=tflite)
  runner = interp.get_signature_runner()
  inputs = runner.get_input_details()
  assert len(inputs) == 64
  feed = {}
  for name, d in inputs.items():
    feed[name] = np.zeros(d["shape"], d["dtype"])
  out = list(runner(**feed).values())[0]
  assert out.shape[-1] == 10


def test_pruned_model_is_sparse_and_the_gate_held(first_run):
  _, info = first_run
  assert info["pruned"]["sparsity"] == pytest.approx(0.8, abs=0.01)
  ev = info["evaluation"]
  assert ev["baseline_accuracy"] - ev["candidate_accuracy"] <= 0.01
  assert ev["baseline_accuracy"] > 0.9


def test_second_run_is_fully_cached(first_run, demo_dir):
  proc = run_demo(demo_dir)
  assert proc.returncode == 0, proc.stderr[-4000:]
  info = summary.collect(str(demo_dir / "metadata.sqlite"), "digits_compression",
                         str(demo_dir / "serving_model"))
  assert set(info["executions"]) == NODES
  assert set(info["executions"].values()) == {"CACHED"}


def test_unreachable_gate_pushes_nothing(first_run, demo_dir):
  pushed_before = sorted(os.listdir(demo_dir / "serving_model"))
  proc = run_demo(demo_dir, "--min-accuracy", "1.01")
  assert proc.returncode == 0, proc.stderr[-4000:]
  info = summary.collect(str(demo_dir / "metadata.sqlite"), "digits_compression",
                         str(demo_dir / "serving_model"))
  assert info["executions"]["Trainer"] == "CACHED"
  assert info["executions"]["CompressionEvaluator"] == "COMPLETE"
  assert info["blessing"]["blessed"] == 0
  assert info["pushed"]["pushed"] == 0
  assert sorted(os.listdir(demo_dir / "serving_model")) == pushed_before
  assert "NOT BLESSED" in proc.stdout and "nothing pushed" in proc.stdout
