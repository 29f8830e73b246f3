"""The CompressionEvaluator's report: JSON, Markdown, and a self-contained HTML page.

Pure functions of an :class:`EvaluationReport` (common/evaluation_report.py,
what :func:`evaluation.evaluate` returns): no file, no TFX, no plotting library. The HTML page inlines its CSS
and draws its plots as SVG, so it opens anywhere, offline (an artifact viewer,
a mail attachment, a CI log).

Example:

    files = render(result.report)   # {"report.json": ..., "report.md": ...,
                                    #  "report.html": ...}
"""

import html
import json
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.common.evaluation_report import EvaluationReport
from tfx_compression.components.common.evaluation_report import sanitize as _sanitize

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"

_BASELINE_COLOR = "#3b6fb6"
_PASS_COLOR = "#1f8a4c"
_FAIL_COLOR = "#c62f2f"
_GRID_COLOR = "#e3e6ea"
_INK = "#1d2630"
_MUTED = "#66707a"


# ---------------------------------------------------------------------------
# Formatting.
# ---------------------------------------------------------------------------


def _finite(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_value(v: Any, digits: int = 4) -> str:
  """A metric value: 4 decimals, 'n/a' for None or NaN."""
  if v is None:
    return "n/a"
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, int):
    return str(v)
  if isinstance(v, float):
    if math.isnan(v):
      return "NaN"
    if math.isinf(v):
      return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"
  return str(v)


def fmt_bytes(n: Any) -> str:
  """Bytes as B, KiB or MiB with the exact count."""
  if not _finite(n):
    return "n/a"
  n = int(n)
  if n >= 1 << 20:
    return f"{n / (1 << 20):.2f} MiB ({n:,} B)"
  if n >= 1 << 10:
    return f"{n / (1 << 10):.1f} KiB ({n:,} B)"
  return f"{n} B"


def fmt_seconds(s: Any) -> str:
  if not _finite(s):
    return "n/a"
  if s < 1e-3:
    return f"{s * 1e6:.1f} µs"
  if s < 1:
    return f"{s * 1e3:.3f} ms"
  return f"{s:.3f} s"


def fmt_ratio(r: Any) -> str:
  return f"{r:.3f}×" if _finite(r) else "n/a"


def fmt_percent(f: Any) -> str:
  return f"{100 * f:.1f}%" if _finite(f) else "n/a"


def _check_rows(report: EvaluationReport) -> List[Tuple[str, str, str, str, bool]]:
  """(threshold, what, value, limit, passed) for every threshold that is set."""
  rows = []
  for c in report.checks:
    rows.append((c.name, c.description, fmt_value(c.value),
                 f"{c.comparison} {c.limit:g}", bool(c.passed)))
  return rows


def _metric_rows(report: EvaluationReport) -> List[Tuple[str, str, str, str]]:
  base = report.metrics["baseline"]
  cand = report.metrics["candidate"]
  rows = []
  for name in thresholds_lib.METRICS:
    b, c = base.get(name), cand.get(name)
    delta = "n/a"
    if _finite(b) and _finite(c):
      change = round(c - b, 4) + 0.0  # no "-0.0000" for a tiny negative
      delta = f"{change:+.4f}"
    label = name
    if name == "top_k_accuracy":
      label = f"top_{report.examples.top_k}_accuracy"
    rows.append((label, fmt_value(b), fmt_value(c), delta))
  return rows


# ---------------------------------------------------------------------------
# JSON and Markdown.
# ---------------------------------------------------------------------------


def to_json(report: EvaluationReport) -> str:
  """Strict JSON (NaN -> null), keys sorted."""
  return report.to_json()


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  def esc(s):
    return str(s).replace("|", "\\|")
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def to_markdown(report: EvaluationReport) -> str:
  """The report as Markdown: verdict, thresholds, metrics, size, latency."""
  status = "BLESSED" if report.blessed else "NOT BLESSED"
  ex = report.examples
  sizes, lat, sp = report.sizes, report.latency, report.sparsity
  out = [f"# Compression gate: {status}", "", report.verdict, ""]
  out += ["## Thresholds", ""]
  rows = [(n, d, v, l, "pass" if p else "**FAIL**")
          for n, d, v, l, p in _check_rows(report)]
  out.append(_md_table(["threshold", "what", "value", "limit", "result"], rows))
  if report.reasons:
    out += ["", "Other reasons it was not blessed:", ""]
    out += [f"- {r}" for r in report.reasons]
  out += ["", f"## Metrics ({ex.count} examples of the '{ex.split}' "
          f"split; gate metric: {report.metric})", ""]
  out.append(_md_table(["metric", "baseline", "candidate", "change"],
                       _metric_rows(report)))
  notes = _prediction_notes(report)
  if notes:
    out += [""] + [f"- {n}" for n in notes]
  out += ["", "## Size", "", f"Compared: {sizes.representation}.", ""]
  out.append(_md_table(
      ["", "baseline", "candidate", "baseline / candidate"],
      [("bytes", fmt_bytes(sizes.baseline_bytes),
        fmt_bytes(sizes.candidate_bytes), fmt_ratio(sizes.size_ratio)),
       ("gzip bytes", fmt_bytes(sizes.baseline_gzip_bytes),
        fmt_bytes(sizes.candidate_gzip_bytes),
        fmt_ratio(sizes.gzip_size_ratio))]))
  out += ["", f"`min_compression_ratio` compares the {sizes.compression_measure}"
          " bytes. Baseline SavedModel: "
          f"{fmt_bytes(sizes.baseline_saved_model_bytes)}.", ""]
  out += ["## Latency", ""]
  if lat.samples:
    out.append(_md_table(
        ["", "baseline", "candidate", "candidate / baseline"],
        [("median per example", fmt_seconds(lat.baseline_seconds),
          fmt_seconds(lat.candidate_seconds),
          fmt_ratio(lat.latency_ratio))]))
    out += ["", f"{lat.runtime}; {lat.threads} thread(s); "
            f"{lat.samples} examples timed per model after "
            f"{lat.warmup} warm-up calls; the models take turns every "
            f"{lat.block} example(s).", ""]
  else:
    out += ["Not measured (`latency_samples`=0).", ""]
  out += ["## Sparsity", "",
          f"Candidate: {fmt_percent(sp.candidate)} ({sp.source}); "
          f"baseline: {fmt_percent(sp.baseline)}.", ""]
  search = report.pruning_search
  if search and search.get("steps"):
    out += ["## Pruning search", "",
            f"Chosen sparsity: {fmt_value(search.get('chosen_sparsity'), 2)}; "
            f"baseline {search.get('steps', [{}])[0].get('metric_name', '')}: "
            f"{fmt_value(search.get('baseline_metric'))}.", ""]
    out.append(_md_table(
        ["sparsity", "metric", "nonzero params", "gzip bytes", "passed"],
        [(fmt_value(s.get("sparsity"), 2), fmt_value(s.get("metric")),
          str(s.get("nonzero_params", "")), fmt_bytes(s.get("gzip_bytes")),
          "yes" if s.get("passed") else "no") for s in search["steps"]]))
    out.append("")
  return "\n".join(out).rstrip() + "\n"


def _prediction_notes(report: EvaluationReport) -> List[str]:
  ex = report.examples
  notes = []
  for role, bad, logits in (
      ("baseline", ex.baseline_nonfinite, ex.baseline_logit_rows),
      ("candidate", ex.candidate_nonfinite, ex.candidate_logit_rows)):
    if bad:
      notes.append(f"{bad} {role} predictions were NaN or infinite and are "
                   "left out of its metrics.")
    if logits:
      notes.append(f"The {role}'s outputs were read as logits for {logits} "
                   "examples (softmax/sigmoid applied).")
  if ex.outputs_read:
    notes.append(f"How the outputs were read ({ex.baseline_outputs}): "
                 f"{ex.outputs_read}.")
  if ex.baseline_at_chance:
    notes.append("The baseline is at chance level: its accuracy is no better "
                 "than always predicting the most frequent class "
                 f"({fmt_value(ex.chance_accuracy)}).")
  return notes


# ---------------------------------------------------------------------------
# SVG plots.
# ---------------------------------------------------------------------------


def _nice_step(span: float, target: int = 5) -> float:
  if span <= 0 or not math.isfinite(span):
    return 1.0
  raw = span / target
  mag = 10 ** math.floor(math.log10(raw))
  for m in (1, 2, 2.5, 5, 10):
    if m * mag >= raw:
      return m * mag
  return 10 * mag


def _ticks(lo: float, hi: float) -> List[float]:
  step = _nice_step(hi - lo)
  start = math.ceil(lo / step - 1e-9) * step
  ticks = []
  v = start
  while v <= hi + 1e-9 * step:
    ticks.append(round(v, 10))
    v += step
  return ticks


def _tick_label(v: float, step: float) -> str:
  decimals = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
  if step < 1 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-9:
    decimals += 1
  return f"{v:.{decimals}f}"


class _Chart:
  """A small SVG line/scatter chart with axes, grid and labels."""

  def __init__(self, xlim, ylim, width=440, height=300, title=""):
    self.x0, self.x1 = xlim
    self.y0, self.y1 = ylim
    self.w, self.h = width, height
    self.left, self.right, self.top, self.bottom = 62, 18, 34, 46
    self.parts: List[str] = []
    self.title = title

  def x(self, v: float) -> float:
    span = (self.x1 - self.x0) or 1.0
    return self.left + (v - self.x0) / span * (self.w - self.left - self.right)

  def y(self, v: float) -> float:
    span = (self.y1 - self.y0) or 1.0
    return self.h - self.bottom - (v - self.y0) / span * (
        self.h - self.top - self.bottom)

  def axes(self, xlabel: str, ylabel: str, xfmt=None, yfmt=None) -> None:
    xt, yt = _ticks(self.x0, self.x1), _ticks(self.y0, self.y1)
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    p = self.parts
    for v in yt:
      p.append(f'<line x1="{self.left}" x2="{self.w - self.right}" '
               f'y1="{self.y(v):.1f}" y2="{self.y(v):.1f}" '
               f'stroke="{_GRID_COLOR}" stroke-width="1"/>')
      label = yfmt(v) if yfmt else _tick_label(v, ystep)
      p.append(f'<text x="{self.left - 8}" y="{self.y(v) + 4:.1f}" '
               f'text-anchor="end" class="tick">{html.escape(label)}</text>')
    for v in xt:
      p.append(f'<line x1="{self.x(v):.1f}" x2="{self.x(v):.1f}" '
               f'y1="{self.top}" y2="{self.h - self.bottom}" '
               f'stroke="{_GRID_COLOR}" stroke-width="1"/>')
      label = xfmt(v) if xfmt else _tick_label(v, xstep)
      p.append(f'<text x="{self.x(v):.1f}" y="{self.h - self.bottom + 17}" '
               f'text-anchor="middle" class="tick">{html.escape(label)}</text>')
    p.append(f'<rect x="{self.left}" y="{self.top}" '
             f'width="{self.w - self.left - self.right}" '
             f'height="{self.h - self.top - self.bottom}" fill="none" '
             f'stroke="#b9c0c8"/>')
    p.append(f'<text x="{(self.left + self.w - self.right) / 2:.1f}" '
             f'y="{self.h - 8}" text-anchor="middle" class="axis">'
             f'{html.escape(xlabel)}</text>')
    cy = (self.top + self.h - self.bottom) / 2
    p.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" class="axis" '
             f'transform="rotate(-90 14 {cy:.1f})">{html.escape(ylabel)}</text>')
    if self.title:
      p.append(f'<text x="{self.left}" y="20" class="title">'
               f'{html.escape(self.title)}</text>')

  def hline(self, v: float, color: str, label: str, dash="6 4",
            label_at: str = "right") -> None:
    y = self.y(v)
    self.parts.append(
        f'<line x1="{self.left}" x2="{self.w - self.right}" y1="{y:.1f}" '
        f'y2="{y:.1f}" stroke="{color}" stroke-width="1.5" '
        f'stroke-dasharray="{dash}"/>')
    x, anchor = ((self.w - self.right - 4, "end") if label_at == "right"
                 else (self.left + 4, "start"))
    self.parts.append(
        f'<text x="{x}" y="{y - 5:.1f}" text-anchor="{anchor}" '
        f'class="note" fill="{color}">{html.escape(label)}</text>')

  def vline(self, v: float, color: str, label: str, dash="6 4") -> None:
    x = self.x(v)
    self.parts.append(
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" '
        f'y2="{self.h - self.bottom}" stroke="{color}" stroke-width="1.5" '
        f'stroke-dasharray="{dash}"/>')
    self.parts.append(
        f'<text x="{x + 4:.1f}" y="{self.top + 12}" class="note" '
        f'fill="{color}">{html.escape(label)}</text>')

  def band(self, x0, x1, y0, y1, color: str, opacity=0.08) -> None:
    xs = sorted((self.x(max(self.x0, min(self.x1, x0))),
                 self.x(max(self.x0, min(self.x1, x1)))))
    ys = sorted((self.y(max(self.y0, min(self.y1, y0))),
                 self.y(max(self.y0, min(self.y1, y1)))))
    self.parts.append(
        f'<rect x="{xs[0]:.1f}" y="{ys[0]:.1f}" width="{xs[1] - xs[0]:.1f}" '
        f'height="{ys[1] - ys[0]:.1f}" fill="{color}" opacity="{opacity}"/>')

  def polyline(self, points, color: str) -> None:
    pts = " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b in points)
    self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" '
                      'stroke-width="2"/>')

  def arrow(self, a, b, color: str) -> None:
    (xa, ya), (xb, yb) = (self.x(a[0]), self.y(a[1])), (self.x(b[0]), self.y(b[1]))
    length = math.hypot(xb - xa, yb - ya)
    if length < 20:
      return
    # Stop short of both markers.
    ux, uy = (xb - xa) / length, (yb - ya) / length
    xa, ya, xb, yb = xa + 9 * ux, ya + 9 * uy, xb - 11 * ux, yb - 11 * uy
    self.parts.append(
        f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" '
        f'stroke="{color}" stroke-width="1.5" marker-end="url(#arrowhead)"/>')

  def point(self, x, y, color: str, label: str = "", shape="circle",
            label_side="above", r=6.5, hollow=False) -> None:
    cx, cy = self.x(x), self.y(y)
    fill = "white" if hollow else color
    if shape == "diamond":
      d = r * 1.3
      self.parts.append(
          f'<path d="M{cx:.1f},{cy - d:.1f} L{cx + d:.1f},{cy:.1f} '
          f'L{cx:.1f},{cy + d:.1f} L{cx - d:.1f},{cy:.1f} Z" fill="{fill}" '
          f'stroke="{color}" stroke-width="2"/>')
    else:
      self.parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" '
                        f'fill="{fill}" stroke="{color}" stroke-width="2"/>')
    if label:
      # Above (or below) the marker, kept inside the plot area.
      dy = -13 if label_side == "above" else 22
      lx = min(max(cx, self.left + 50), self.w - self.right - 50)
      self.parts.append(
          f'<text x="{lx:.1f}" y="{cy + dy:.1f}" text-anchor="middle" '
          f'class="label" fill="{color}">{html.escape(label)}</text>')

  def svg(self, aria_label: str) -> str:
    defs = ('<defs><marker id="arrowhead" markerWidth="8" markerHeight="8" '
            'refX="6" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 Z" '
            f'fill="{_MUTED}"/></marker></defs>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} '
            f'{self.h}" width="{self.w}" height="{self.h}" role="img" '
            f'aria-label="{html.escape(aria_label)}">{defs}'
            + "".join(self.parts) + "</svg>")


def _padded(values: Sequence[float], bounded: bool,
            min_pad: float = 0.005) -> Tuple[float, float]:
  lo, hi = min(values), max(values)
  pad = max((hi - lo) * 0.25, min_pad, abs(hi) * 0.01)
  lo, hi = lo - pad, hi + pad
  if bounded:
    # Stay within [0, 1], leaving room for a marker sitting at 1.0.
    lo = max(0.0, lo)
    hi = min(hi, 1.0 + min(pad, 0.01) if max(values) > 0.995 else 1.0)
  return lo, hi


def size_metric_svg(report: EvaluationReport) -> Optional[str]:
  """Size (x) against the gate metric (y) for baseline and candidate, with
  the region the thresholds accept shaded."""
  metric = report.metric
  sizes = report.sizes
  gzip = sizes.compression_measure == "gzip"
  bx, cx = ((sizes.baseline_gzip_bytes, sizes.candidate_gzip_bytes) if gzip
            else (sizes.baseline_bytes, sizes.candidate_bytes))
  by = report.metric_value("baseline")
  cy = report.metric_value("candidate")
  if not all(_finite(v) for v in (bx, cx, by)):
    return None
  unit, scale = ("MiB", 1 << 20) if max(bx, cx) >= 4 << 20 else ("KiB", 1 << 10)
  bx, cx = bx / scale, cx / scale
  bound = report.quality_bound()
  ys = [by] + ([cy] if _finite(cy) else []) + ([bound] if _finite(bound) else [])
  higher, bounded = thresholds_lib.METRICS[metric]
  ylim = _padded(ys, bounded)
  chart = _Chart((0.0, max(bx, cx) * 1.18), ylim,
                 title=f"Size against {metric}")
  chart.axes(f"{'gzip ' if gzip else ''}size ({unit})", metric)
  t = report.thresholds
  max_size = (bx / t.min_compression_ratio
              if t.min_compression_ratio else chart.x1)
  if _finite(bound):
    if higher:
      chart.band(0.0, max_size, bound, chart.y1, _PASS_COLOR)
    else:
      chart.band(0.0, max_size, chart.y0, bound, _PASS_COLOR)
    chart.hline(bound, _PASS_COLOR,
                f"gate: {metric} {'≥' if higher else '≤'} {bound:.4f}")
  if t.min_compression_ratio:
    chart.vline(max_size, _PASS_COLOR,
                f"size ≤ baseline / {t.min_compression_ratio:g}")
  color = _PASS_COLOR if report.blessed else _FAIL_COLOR
  # The lower point's label goes below it, so close points keep apart.
  cand_below = _finite(cy) and cy < by
  if _finite(cy):
    chart.arrow((bx, by), (cx, cy), _MUTED)
    chart.point(cx, cy, color, f"candidate {cy:.4f}", shape="diamond",
                label_side="below" if cand_below else "above")
  chart.point(bx, by, _BASELINE_COLOR, f"baseline {by:.4f}",
              label_side="above" if cand_below or not _finite(cy) or cy == by
              else "below")
  return chart.svg(f"Size against {metric} for the baseline and the candidate")


def search_svg(report: EvaluationReport) -> Optional[str]:
  """The Pruner's search: sparsity (x) against its metric (y), the gate line."""
  search = report.pruning_search or {}
  steps = [s for s in search.get("steps") or []
           if _finite(s.get("sparsity")) and _finite(s.get("metric"))]
  if not steps:
    return None
  steps = sorted(steps, key=lambda s: s["sparsity"])
  name = steps[0].get("metric_name") or report.metric
  try:
    canonical = thresholds_lib.canonical_metric(name)
  except (TypeError, ValueError):
    canonical = None
  base = search.get("baseline_metric")
  bound = (report.quality_bound(base) if canonical == report.metric
           and _finite(base) else None)
  ys = [s["metric"] for s in steps] + [v for v in (base, bound) if _finite(v)]
  bounded = canonical is not None and thresholds_lib.METRICS[canonical][1]
  chart = _Chart((0.0, 1.0), _padded(ys, bounded),
                 title=f"Pruning search: sparsity against {name}")
  chart.axes("sparsity", name, xfmt=lambda v: f"{100 * v:.0f}%")
  # Line labels on the left: searches try the high sparsities on the right.
  if _finite(base):
    chart.hline(base, _BASELINE_COLOR, f"baseline {base:.4f}", dash="2 3",
                label_at="left")
  if _finite(bound):
    higher = thresholds_lib.higher_is_better(canonical)
    chart.hline(bound, _PASS_COLOR,
                f"gate {'≥' if higher else '≤'} {bound:.4f}", label_at="left")
  chosen = search.get("chosen_sparsity")
  if _finite(chosen):
    chart.vline(chosen, _INK, f"chosen {100 * chosen:.0f}%", dash="2 3")
  chart.polyline([(s["sparsity"], s["metric"]) for s in steps], "#8a96a3")
  for s in steps:
    color = _PASS_COLOR if s.get("passed") else _FAIL_COLOR
    chart.point(s["sparsity"], s["metric"], color, r=5)
  return chart.svg(f"Pruning search: sparsity against {name}")


# ---------------------------------------------------------------------------
# HTML.
# ---------------------------------------------------------------------------

_CSS = """
:root { --ink: #1d2630; --muted: #66707a; --line: #e3e6ea; --pass: #1f8a4c;
  --fail: #c62f2f; --base: #3b6fb6; --bg: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "DejaVu Sans", sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 28px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 12px; }
.sub { color: var(--muted); margin: 0 0 18px; }
.verdict { display: flex; gap: 16px; align-items: center; padding: 16px 20px;
  border-radius: 10px; color: white; margin-bottom: 20px; }
.verdict.pass { background: var(--pass); } .verdict.fail { background: var(--fail); }
.verdict .badge { font-weight: 700; font-size: 18px; letter-spacing: .04em;
  white-space: nowrap; padding: 4px 12px; border: 2px solid rgba(255,255,255,.7);
  border-radius: 6px; }
.verdict p { margin: 0; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px;
  margin-bottom: 20px; }
.card, section { background: white; border: 1px solid var(--line);
  border-radius: 10px; }
.card { padding: 12px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .05em; }
.card .v { font-size: 20px; font-weight: 650; }
.card .d { color: var(--muted); font-size: 12px; }
section { padding: 16px 18px; margin-bottom: 16px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px;
  text-transform: uppercase; letter-spacing: .04em; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.gate td { font-weight: 650; background: #f3f7fd; }
.chip { display: inline-block; padding: 1px 9px; border-radius: 999px;
  font-size: 12px; font-weight: 700; color: white; }
.chip.pass { background: var(--pass); } .chip.fail { background: var(--fail); }
.plots { display: flex; flex-wrap: wrap; gap: 16px; justify-content: center; }
.plots figure { margin: 0; }
.plots figcaption { color: var(--muted); font-size: 12px; max-width: 440px; }
svg text { font-family: inherit; }
svg .tick { font-size: 11px; fill: var(--muted); }
svg .axis { font-size: 12px; fill: var(--ink); }
svg .title { font-size: 13px; font-weight: 650; fill: var(--ink); }
svg .label { font-size: 12px; font-weight: 650; }
svg .note { font-size: 11px; }
svg .label, svg .note { paint-order: stroke; stroke: white; stroke-width: 3px;
  stroke-linejoin: round; }
ul.notes { margin: 8px 0 0; padding-left: 18px; color: var(--muted); }
details { color: var(--muted); }
pre { background: var(--bg); padding: 10px; border-radius: 6px; overflow: auto;
  font-size: 12px; }
@media (max-width: 720px) { .cards { grid-template-columns: repeat(2, 1fr); } }
"""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           row_classes: Optional[Sequence[str]] = None,
           num_cols: Sequence[int] = ()) -> str:
  out = ["<table><thead><tr>"]
  out += [f"<th>{html.escape(h)}</th>" for h in header]
  out.append("</tr></thead><tbody>")
  for i, row in enumerate(rows):
    cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
    out.append(f"<tr{cls}>")
    for j, cell in enumerate(row):
      td = '<td class="num">' if j in num_cols else "<td>"
      out.append(f"{td}{cell}</td>")
    out.append("</tr>")
  out.append("</tbody></table>")
  return "".join(out)


def _chip(passed: bool) -> str:
  return ('<span class="chip pass">PASS</span>' if passed
          else '<span class="chip fail">FAIL</span>')


def to_html(report: EvaluationReport) -> str:
  """A self-contained HTML page (inline CSS and SVG; nothing is fetched)."""
  e = html.escape
  blessed = report.blessed
  metric = report.metric
  ex, sizes = report.examples, report.sizes
  lat, sp = report.latency, report.sparsity
  base_m = report.metric_value("baseline")
  cand_m = report.metric_value("candidate")
  drop = report.metric_drop

  cards = [
      (metric, fmt_value(cand_m),
       f"baseline {fmt_value(base_m)}; drop {fmt_value(drop)}"),
      ("size ratio", fmt_ratio(sizes.size_ratio),
       f"gzip {fmt_ratio(sizes.gzip_size_ratio)}"),
      ("latency ratio", fmt_ratio(lat.latency_ratio),
       f"{fmt_seconds(lat.candidate_seconds)} vs "
       f"{fmt_seconds(lat.baseline_seconds)}"),
      ("sparsity", fmt_percent(sp.candidate),
       f"baseline {fmt_percent(sp.baseline)}"),
  ]
  cards_html = "".join(
      f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}'
      f'</div><div class="d">{e(d)}</div></div>' for k, v, d in cards)

  check_rows = [(f"<code>{e(n)}</code>", e(d), e(v), e(l), _chip(p))
                for n, d, v, l, p in _check_rows(report)]
  check_rows += [("<em>other</em>", e(r), "", "", _chip(False))
                 for r in report.reasons]
  thresholds_html = _table(["threshold", "what", "value", "limit", "result"],
                           check_rows, num_cols=(2, 3))

  metric_rows = _metric_rows(report)
  row_classes = ["gate" if (r[0] == metric or (
      metric == "top_k_accuracy" and r[0].startswith("top_"))) else ""
                 for r in metric_rows]
  metrics_html = _table(["metric", "baseline", "candidate", "change"],
                        [[e(c) for c in r] for r in metric_rows], row_classes,
                        num_cols=(1, 2, 3))
  notes = _prediction_notes(report)
  notes_html = ("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes)
                + "</ul>") if notes else ""

  size_html = _table(
      ["", "baseline", "candidate", "baseline / candidate"],
      [["bytes", e(fmt_bytes(sizes.baseline_bytes)),
        e(fmt_bytes(sizes.candidate_bytes)), e(fmt_ratio(sizes.size_ratio))],
       ["gzip bytes", e(fmt_bytes(sizes.baseline_gzip_bytes)),
        e(fmt_bytes(sizes.candidate_gzip_bytes)),
        e(fmt_ratio(sizes.gzip_size_ratio))]], num_cols=(1, 2, 3))
  if lat.samples:
    lat_html = _table(
        ["", "baseline", "candidate", "candidate / baseline"],
        [["median per example", e(fmt_seconds(lat.baseline_seconds)),
          e(fmt_seconds(lat.candidate_seconds)),
          e(fmt_ratio(lat.latency_ratio))]], num_cols=(1, 2, 3))
    lat_html += (f"<p class='sub'>{e(lat.runtime)}; {lat.threads} "
                 f"thread(s); {lat.samples} examples timed per model after "
                 f"{lat.warmup} warm-up calls; the models take turns every "
                 f"{lat.block} example(s).</p>")
  else:
    lat_html = "<p>Not measured (<code>latency_samples</code>=0).</p>"

  plots = []
  svg = size_metric_svg(report)
  if svg:
    plots.append(
        f"<figure>{svg}<figcaption>Baseline (circle) and candidate (diamond). "
        "The shaded region is what the thresholds accept.</figcaption></figure>")
  svg = search_svg(report)
  if svg:
    plots.append(
        f"<figure>{svg}<figcaption>The Pruner's search: each step's sparsity "
        "and metric (green passed the gate, red did not).</figcaption></figure>")
  plots_html = (f"<section><h2>Plots</h2><div class='plots'>{''.join(plots)}"
                "</div></section>") if plots else ""

  cand = report.models["candidate"]
  models_html = _table(
      ["", "kind", "path"],
      [["baseline", e(report.models["baseline"]["kind"]),
        f"<code>{e(str(report.models['baseline']['path']))}</code>"],
       ["candidate", e(cand["kind"] + (f" (preprocessing: {cand['preprocessing']})"
                                       if cand.get("preprocessing") else "")),
        f"<code>{e(str(cand['path']))}</code>"]])
  blessing_note = ""
  if report.baseline_blessed is not None:
    upstream = "blessed" if report.baseline_blessed else "NOT blessed"
    blessing_note = f"<p>Upstream blessing of the baseline: {upstream}.</p>"

  config_json = json.dumps(_sanitize(dict(report.config)), indent=2,
                           sort_keys=True)
  status = "BLESSED" if blessed else "NOT BLESSED"
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Compression gate: {status}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>Compression gate</h1>
<p class="sub">{ex.count} examples of the '{e(ex.split)}' split;
label <code>{e(str(ex.label_key))}</code>; {ex.num_classes} classes;
gate metric <strong>{e(metric)}</strong>.</p>
<div class="verdict {'pass' if blessed else 'fail'}">
<div class="badge">{status}</div><p>{e(report.verdict)}</p></div>
<div class="cards">{cards_html}</div>
<section><h2>Thresholds</h2>{thresholds_html}</section>
{plots_html}
<section><h2>Metrics</h2>{metrics_html}{notes_html}</section>
<section><h2>Size</h2><p class="sub">Compared: {e(sizes.representation)}.
<code>min_compression_ratio</code> compares the {e(sizes.compression_measure)}
bytes. Baseline SavedModel: {e(fmt_bytes(sizes.baseline_saved_model_bytes))}.
</p>{size_html}</section>
<section><h2>Latency</h2>{lat_html}</section>
<section><h2>Sparsity</h2><p>Candidate {e(fmt_percent(sp.candidate))}
({e(sp.source)}); baseline {e(fmt_percent(sp.baseline))}.</p>
</section>
<section><h2>Models</h2>{models_html}{blessing_note}
<details><summary>Configuration</summary><pre>{e(config_json)}</pre></details>
</section>
</main></body></html>
"""


def render(report: EvaluationReport) -> Dict[str, str]:
  """{file name: content} of the three report files."""
  return {JSON_NAME: to_json(report), MARKDOWN_NAME: to_markdown(report),
          HTML_NAME: to_html(report)}
