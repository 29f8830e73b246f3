"""The benchmark's quick mode: every row and figure is written, and finite.

Runs ``python -m benchmarks.run --smoke`` (tiny steps and data) once. The
figures of a smoke run say nothing about the targets; this checks the plumbing:
both sides ran, every model was measured, the timings and the evaluator's memory
were read, and the table was printed.
"""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BASE_ROWS = ("baseline", "pruned", "pruned_dynamic", "pruned_int8", "qat_int8",
             "channels", "channels_int8", "channels_int8_packed")
SEARCH_ROWS = ("search_unstructured", "search_channels")
FIGURES = ("accuracy", "raw_bytes", "gzip_bytes", "latency_us", "gzip_ratio",
           "raw_ratio", "latency_ratio", "accuracy_drop_points")


def _finite(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("benchmark")
  out = tmp / "smoke.json"
  proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.run", "--smoke", "--out", str(out),
       "--work-dir", str(tmp / "work")],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
  with open(out) as f:
    return proc.stdout, json.load(f)


def test_every_row_is_measured_on_both_sides(smoke):
  _, result = smoke
  assert result["mode"] == "smoke" and result["errors"] == []
  rows = result["rows"]
  searched = {s for s, r in result["search"].items() if r.get("available")}
  expected = BASE_ROWS + tuple(f"search_{s}" for s in sorted(searched))
  for row in expected:
    ours = rows[row]["ours"]
    for key in FIGURES:
      assert _finite(ours[key]), (row, key, ours[key])
    assert 0.0 <= ours["accuracy"] <= 1.0
    assert ours["gzip_bytes"] < ours["raw_bytes"] * 1.01
  for row in BASE_ROWS:
    ref = rows[row]["reference"]
    for key in FIGURES:
      assert _finite(ref[key]), (row, key, ref[key])
    assert _finite(rows[row]["ours_vs_reference"]["gzip_bytes"])
  # Every row name is in the JSON, measured or with the reason it was not.
  for row in SEARCH_ROWS:
    assert row in rows
    if row[len("search_"):] not in searched:
      assert rows[row]["ours"] is None and "not run" in rows[row]["note"]
  # Sanity that can fail: int8 weights are about a quarter of float32's.
  assert rows["pruned_int8"]["ours"]["raw_bytes"] < (
      0.4 * rows["baseline"]["ours"]["raw_bytes"])
  assert rows["baseline"]["ours"]["gzip_ratio"] == pytest.approx(1.0)
  # One packed input drops the 64 per-input QUANTIZE ops and their tensors,
  # and predicts the same classes as the 64-input model.
  for side in ("ours", "reference"):
    assert rows["channels_int8_packed"][side]["raw_bytes"] < (
        rows["channels_int8"][side]["raw_bytes"])
  assert abs(rows["channels_int8_packed"]["ours"]["accuracy"]
             - rows["channels_int8"]["ours"]["accuracy"]) < 0.02


def test_timings_memory_and_targets_are_finite(smoke):
  stdout, result = smoke
  timings = result["timings"]
  for key in ("ours_seconds", "reference_seconds", "ratio"):
    assert _finite(timings["compression_steps"][key]) and (
        timings["compression_steps"][key] > 0)
  cached = timings["cached_rerun"]
  assert cached["all_cached"] is True
  assert cached["cached_run_seconds"] < cached["first_run_seconds"]
  memory = result["memory"]
  assert len(memory["by_size"]) == 2 and _finite(memory["ratio"])
  for size, entry in memory["by_size"].items():
    assert entry["examples"] == int(size)
    assert entry["peak_rss_bytes"] > 100 * 2**20  # TensorFlow alone is more
  names = [t["name"] for t in result["targets"]]
  assert len(names) == len(set(names)) >= 12
  for target in result["targets"]:
    if target["name"].startswith("search") and not any(
        r.get("available") for r in result["search"].values()):
      continue
    assert _finite(target["figure"]), target
    assert target["pass"] in (True, False)
  # The printed table has a line per row.
  for label in ("baseline (float TFLite)", "pruned + int8", "channels + int8"):
    assert label in stdout
