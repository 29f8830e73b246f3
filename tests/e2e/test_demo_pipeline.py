"""End to end: the demo pipeline with LocalDagRunner, as `make demo` runs it.

One output directory is shared by the runs in order: a full run, an identical re-run
(everything cached, with --verbose), a run whose gate cannot be met (nothing new is
pushed), and a run whose Pruner fails. Output goes to a pipe, as in CI.
"""

import glob
import os
import re
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


# The table's header, as it was before the console work (issue 22: "the same table").
TABLE_HEADER = ("model                 accuracy       bytes  gzip bytes latency us  "
                "sparsity  gate")
# What libraries print: Python warnings, absl/TF/Beam log lines, C++ log lines.
LIBRARY_LINE = re.compile(r"Warning|WARNING|^[IWEF]\d{4} |^\d{4}-\d\d-\d\d .*\] |"
                          r"^(INFO|DEBUG):|tensorflow|running bdist_wheel")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def test_every_step_ran_and_the_table_is_printed(first_run):
  proc, info = first_run
  assert set(info["executions"]) == NODES
  assert set(info["executions"].values()) == {"COMPLETE"}
  assert TABLE_HEADER in proc.stdout.splitlines()
  assert "baseline (Trainer)" in proc.stdout and "compressed" in proc.stdout
  assert "compression report: file://" in proc.stdout
  assert "tensorboard --logdir" in proc.stdout


def test_the_console_is_short_and_quiet(first_run):
  proc, _ = first_run
  lines = (proc.stdout + proc.stderr).splitlines()
  assert len(lines) <= 40, "\n".join(lines)
  noisy = [l for l in lines if LIBRARY_LINE.search(l)]
  assert not noisy, noisy
  assert not CONTROL.search(proc.stdout + proc.stderr)  # a pipe: no \r, no escapes
  for node in NODES:  # one line as each step starts and one as it ends
    assert sum(1 for l in lines if re.match(rf"\[\d/8\] {node} +running$", l)) == 1
    assert sum(1 for l in lines if re.match(rf"\[\d/8\] {node} +complete ", l)) == 1
  assert re.search(r"Pruner +complete .*sparsity 80", proc.stdout)
  assert re.search(r"CompressionEvaluator +complete .*BLESSED", proc.stdout)


def test_the_log_file_holds_the_rest(first_run, demo_dir):
  proc, _ = first_run
  logs = glob.glob(str(demo_dir / "logs" / "run-*.log"))
  assert len(logs) == 1
  lines = proc.stdout.splitlines()
  assert lines[0] == f"log: {logs[0]}"  # at the start
  assert lines[-1].split()[-1] == logs[0]  # and in the summary
  with open(logs[0]) as f:
    log = f.read()
  assert "running bdist_wheel" in log  # the Trainer module's wheel build
  assert "tensorflow" in log and "INFO:absl:" in log  # TF, and our absl lines


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


def test_second_run_is_fully_cached_and_verbose_shows_everything(first_run, demo_dir):
  logs_before = os.listdir(demo_dir / "logs")
  proc = run_demo(demo_dir, "--verbose")
  assert proc.returncode == 0, proc.stderr[-4000:]
  info = summary.collect(str(demo_dir / "metadata.sqlite"), "digits_compression",
                         str(demo_dir / "serving_model"))
  assert set(info["executions"]) == NODES
  assert set(info["executions"].values()) == {"CACHED"}
  # --verbose: the libraries' output on the console as before, and no log file.
  console = (proc.stdout + proc.stderr).splitlines()
  assert "running bdist_wheel" in console
  assert sum(1 for l in console if LIBRARY_LINE.search(l)) >= 5
  assert TABLE_HEADER in proc.stdout.splitlines()
  assert os.listdir(demo_dir / "logs") == logs_before


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


def test_a_failing_step_is_named_with_its_reason(first_run, demo_dir):
  """A Pruner that fails at run time: channels cannot reach 99.9%."""
  proc = run_demo(demo_dir, "--sparsity-structure", "channels",
                  "--target-sparsity", "0.999")
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  last = proc.stdout.splitlines()[-3:]
  assert re.match(r"\[5/8\] Pruner +FAILED ", last[0]), last
  assert re.match(r"error: Pruner failed: \w+: .*target_sparsity=0\.999", last[1]), last
  log = last[2].split()[-1]
  assert last[2].startswith("full log with the traceback: ")
  with open(log) as f:
    text = f.read()
  assert "Traceback (most recent call last)" in text
  assert last[1].split(": ")[2] in text  # the exception's type
  assert not CONTROL.search(proc.stdout + proc.stderr)
