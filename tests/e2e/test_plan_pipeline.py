"""End to end: the demo with --plan: Trainer -> CompressionPlanner -> gate -> Pusher.

The planner's choice is gated by the stock CompressionEvaluator and pushed by the
stock Pusher: the pushed file is the very candidate plan.json names, bit for bit.
"""

import hashlib
import os
import subprocess
import sys

import pytest

from tfx_compression.components.common import side_files
from tfx_compression.pipelines import summary

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = {"CsvExampleGen", "StatisticsGen", "SchemaGen", "Trainer",
         "CompressionPlanner", "CompressionEvaluator", "Pusher"}


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("plan_demo")
  cmd = [sys.executable, "-m", "tfx_compression.pipelines.local_runner",
         "--output-dir", str(out), "--train-steps", "300", "--prune-steps", "40",
         "--plan", "--plan-structures", "channels", "--plan-modes", "int8",
         "--search-sparsities", "0.5", "--max-drop", "0.02"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                        timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  info = summary.collect(str(out / "metadata.sqlite"), "digits_compression",
                         str(out / "serving_model"))
  return proc, info


def test_the_planners_choice_is_blessed_and_pushed_bit_for_bit(plan_run):
  proc, info = plan_run
  assert set(info["executions"]) == NODES
  assert set(info["executions"].values()) == {"COMPLETE"}
  assert info["blessing"]["blessed"] == 1
  assert info["pushed"]["pushed"] == 1
  plan = side_files.read_plan(info["planned"]["uri"])
  chosen = plan["candidates"][plan["chosen_index"]]
  assert chosen["passed"] and chosen["mode"] == "int8"
  pushed = os.path.join(info["pushed"]["pushed_destination"], "model.tflite")
  with open(pushed, "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == chosen["sha256"]
  # The gate measured what the planner measured, on the same eval split.
  ev = info["evaluation"]
  assert ev["candidate_accuracy"] == pytest.approx(chosen["metric"], abs=1e-6)
  assert ev["baseline_accuracy"] == pytest.approx(plan["baseline"]["metric"],
                                                  abs=1e-6)
  assert "plan: chose " in proc.stdout


def test_the_report_draws_the_plans_front(plan_run):
  _, info = plan_run
  with open(os.path.join(info["evaluation"]["uri"], "report.html")) as f:
    page = f.read()
  assert "Pareto front" in page
