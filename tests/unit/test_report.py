"""Tests for the report: JSON, Markdown and the self-contained HTML page."""

import dataclasses
import json
import re

import numpy as np
import pytest

from tfx_compression.components.common import evaluation_report as report_types
from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import thresholds
from tfx_compression.components.compression_evaluator import evaluation as ev
from tfx_compression.components.compression_evaluator import report
from tfx_compression.components.compression_evaluator import report_plots


def make_report(candidate_acc=0.9, gate=None, search=None, nonfinite=0,
                baseline_blessed=None):
  """A report as evaluate() builds it, from real stats and a real decision."""
  gate = gate or thresholds.GateThresholds(max_drop=0.02, min_value=0.5,
                                           min_compression_ratio=3.0)
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 4, 400)

  def outputs(acc):
    right = rng.random(400) < acc
    pred = np.where(right, labels, (labels + 1) % 4)
    return np.eye(4)[pred] * 0.7 + 0.075

  base = metrics_lib.metrics_from_stats(
      metrics_lib.batch_stats(outputs(0.95), labels))
  cand = metrics_lib.metrics_from_stats(
      metrics_lib.batch_stats(outputs(candidate_acc), labels))
  sizes = report_types.Sizes(
      representation="TFLite: float baseline against the candidate",
      baseline_bytes=1_146_464, candidate_bytes=301_224,
      baseline_gzip_bytes=1_052_019, candidate_gzip_bytes=263_929,
      size_ratio=1_146_464 / 301_224, gzip_size_ratio=1_052_019 / 263_929,
      baseline_saved_model_bytes=3_807_955, compression_measure="raw")
  latency = report_types.Latency(
      baseline_seconds=8.4e-5, candidate_seconds=3.0e-5,
      latency_ratio=3.0 / 8.4, samples=200, warmup=10, threads=1,
      runtime="TFLite interpreter, 1 thread")
  d = ev.decide(gate, base, cand, sizes.size_ratio, latency.latency_ratio,
                candidate_nonfinite=nonfinite, examples=400,
                baseline_blessed=baseline_blessed)
  return report_types.EvaluationReport(
      blessed=d.blessed, verdict=d.verdict, reasons=d.reasons,
      thresholds=gate, checks=d.checks,
      metric_drop=gate.drop(base[gate.metric], cand[gate.metric]),
      metrics={"baseline": base, "candidate": cand},
      examples=report_types.Examples(
          split="eval", count=400, candidate_nonfinite=nonfinite,
          num_classes=4, top_k=5, label_key="label"),
      sizes=sizes, latency=latency,
      sparsity=report_types.Sparsity(candidate=0.8, source="recorded",
                                     baseline=0.0),
      models={"baseline": {"kind": "keras", "path": "/m/base"},
              "candidate": {"kind": "tflite", "path": "/m/cand.tflite",
                            "preprocessing": "none"}},
      baseline_blessed=baseline_blessed,
      pruning_search=search,
      config={"label_key": "label"},
  )


SEARCH = {"steps": [
    {"sparsity": s, "metric": m, "metric_name": "accuracy", "param_count": 1000,
     "nonzero_params": int(1000 * (1 - s)), "gzip_bytes": int(9000 * (1 - s)),
     "passed": p}
    for s, m, p in ((0.5, 0.95, True), (0.7, 0.945, True), (0.9, 0.90, False))],
          "chosen_sparsity": 0.7, "baseline_metric": 0.951}


class TestMarkdown:

  def test_lists_every_threshold_with_value_limit_and_result(self):
    r = make_report(candidate_acc=0.80)
    md = report.to_markdown(r)
    assert md.startswith("# Compression gate: NOT BLESSED")
    assert r.verdict in md
    for check in r.checks:
      row = next(line for line in md.splitlines()
                 if line.startswith(f"| {check.name} |"))
      assert report.fmt_value(check.value) in row
      assert f"{check.comparison} {check.limit:g}" in row
      assert ("pass" if check.passed else "**FAIL**") in row
    assert [c.name for c in r.checks] == [
        "max_drop", "min_value", "min_compression_ratio"]

  def test_blessed_report_has_metrics_sizes_latency_sparsity(self):
    r = make_report(candidate_acc=0.95)
    md = report.to_markdown(r)
    assert md.startswith("# Compression gate: BLESSED")
    assert f"| accuracy | {r.metrics['baseline']['accuracy']:.4f} |" in md
    assert "1.09 MiB" in md and "294.2 KiB" in md and "3.806×" in md
    assert "84.0 µs" in md and "80.0%" in md
    assert "Pruning search" not in md

  def test_other_reasons_are_listed(self):
    md = report.to_markdown(make_report(candidate_acc=0.95, nonfinite=3,
                                        baseline_blessed=False))
    assert "- the baseline model was not blessed" in md
    assert "3 of 400 candidate predictions were NaN or infinite" in md

  def test_search_table(self):
    md = report.to_markdown(make_report(search=SEARCH))
    assert "## Pruning search" in md and "| 0.70 | 0.9450 |" in md


class TestHtml:

  def test_self_contained(self):
    page = report.to_html(make_report(search=SEARCH))
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    # The only URL is the SVG namespace: nothing is fetched.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", page)

  def test_verdict_thresholds_and_plots(self):
    r = make_report(candidate_acc=0.80)
    page = report.to_html(r)
    assert "NOT BLESSED" in page and "verdict fail" in page
    assert page.count('class="chip fail"') == sum(
        not c.passed for c in r.checks)
    for c in r.checks:
      assert f"<code>{c.name}</code>" in page
    assert page.count("<svg") == 1  # size against metric only
    assert "Size against accuracy" in page

  def test_search_curve_is_drawn(self):
    page = report.to_html(make_report(candidate_acc=0.95, search=SEARCH))
    assert "verdict pass" in page
    assert page.count("<svg") == 2
    svg = report_plots.search_svg(make_report(search=SEARCH))
    assert svg.count("<circle") == len(SEARCH["steps"])
    assert "chosen 70%" in svg and "gate ≥ 0.9310" in svg


class TestPlot:

  def test_points_sit_at_their_values(self):
    r = make_report(candidate_acc=0.95)
    svg = report_plots.size_metric_svg(r)
    assert "baseline" in svg and "candidate" in svg
    # The gate line: baseline - max_drop, the higher of the two floors.
    bound = r.quality_bound()
    assert bound == pytest.approx(r.metrics["baseline"]["accuracy"] - 0.02)
    assert f"accuracy ≥ {bound:.4f}" in svg
    assert "size ≤ baseline / 3" in svg

  def test_lower_is_better_metric(self):
    gate = thresholds.GateThresholds(metric="crossentropy", max_drop=0.05)
    r = make_report(gate=gate)
    assert r.quality_bound() == pytest.approx(
        r.metrics["baseline"]["crossentropy"] + 0.05)
    assert "crossentropy ≤" in report_plots.size_metric_svg(r)

  def test_no_plot_without_sizes(self):
    r = make_report()
    r = dataclasses.replace(
        r, sizes=dataclasses.replace(r.sizes, candidate_bytes=None))
    assert report_plots.size_metric_svg(r) is None
    assert "<svg" not in report.to_html(r)


class TestJson:

  def test_strict_json_round_trip(self):
    r = make_report(search=SEARCH)
    r.metrics["candidate"]["auc"] = float("nan")
    text = report.to_json(r)
    back = json.loads(text)
    assert back["metrics"]["candidate"]["auc"] is None
    assert back["verdict"] == r.verdict
    assert back["checks"][0]["name"] == "max_drop"
    again = report_types.EvaluationReport.from_json(text)
    assert again.thresholds == r.thresholds and again.checks == r.checks
    assert again.sizes == r.sizes and again.latency == r.latency
    assert again.examples == r.examples and again.sparsity == r.sparsity
    assert again.metrics["candidate"]["auc"] is None
    assert again.to_json() == text

  def test_json_keeps_the_layout_report_json_has(self):
    back = json.loads(make_report().to_json())
    assert sorted(back) == [
        "baseline_blessed", "blessed", "checks", "config", "examples",
        "higher_is_better", "latency", "metric", "metric_drop", "metrics",
        "models", "pruning_search", "reasons", "sizes", "sparsity",
        "thresholds", "verdict"]
    assert sorted(back["latency"]) == [
        "baseline_seconds", "block", "candidate_seconds", "latency_ratio",
        "runtime", "samples", "threads", "warmup"]
    assert back["metric"] == "accuracy" and back["higher_is_better"] is True

  def test_from_json_refuses_what_is_not_a_report(self):
    with pytest.raises(ValueError, match="not valid JSON"):
      report_types.EvaluationReport.from_json("{")
    with pytest.raises(ValueError, match="holds no `thresholds`"):
      report_types.EvaluationReport.from_json('{"verdict": "x"}')

  def test_latency_in_microseconds(self):
    lat = make_report().latency
    assert lat.baseline_us == pytest.approx(84.0)
    assert lat.candidate_us == pytest.approx(30.0)
    assert report_types.Latency().candidate_us is None

  def test_render_writes_three_files(self):
    files = report.render(make_report())
    assert set(files) == {"report.json", "report.md", "report.html"}


class TestSummary:

  def test_console_table_reads_sizes_and_latency_off_the_report(self):
    from tfx_compression.pipelines import summary  # pylint: disable=g-import-not-at-top
    info = {"evaluation": {"metric": "accuracy", "baseline_accuracy": 0.95,
                           "candidate_accuracy": 0.94, "sparsity": 0.8},
            "blessing": {"blessed": 1}, "pushed": {"pushed": 0},
            "report": make_report()}
    lines = summary.render(info).splitlines()
    assert lines[2].split()[3:6] == ["1,146,464", "1,052,019", "84.0"]
    assert lines[3].split()[1:5] == ["0.9400", "301,224", "263,929", "30.0"]
    assert lines[4] == ("(sizes and latency: TFLite: float baseline against "
                        "the candidate)")
    info["report"] = None
    assert summary.render(info).splitlines()[2].split()[3:6] == ["-", "-", "-"]


class TestWorstAllowed:

  def test_highest_floor_or_lowest_ceiling(self):
    gate = thresholds.GateThresholds(max_drop=0.02, max_relative_drop=0.01,
                                     min_value=0.5)
    assert gate.worst_allowed(0.95) == pytest.approx(0.95 - 0.0095)
    assert thresholds.GateThresholds(min_value=0.5).worst_allowed(
        float("nan")) == 0.5
    assert thresholds.GateThresholds(max_drop=0.02).worst_allowed(None) is None
    low = thresholds.GateThresholds(metric="crossentropy", max_drop=0.1,
                                    max_relative_drop=0.5)
    assert low.worst_allowed(0.4) == pytest.approx(0.5)
