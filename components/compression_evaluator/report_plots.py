"""The report's plots as inline SVG: size against the gate metric, the search curve.

Pure functions of an :class:`EvaluationReport`; no plotting library, so the
HTML page that inlines them opens anywhere, offline.

Example:

    svg = size_metric_svg(report)   # None when a size is missing
"""

import html
import math
from typing import Any, List, Optional, Sequence, Tuple

from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.common.evaluation_report import EvaluationReport

_BASELINE_COLOR = "#3b6fb6"
_PASS_COLOR = "#1f8a4c"
_FAIL_COLOR = "#c62f2f"
_GRID_COLOR = "#e3e6ea"
_INK = "#1d2630"
_MUTED = "#66707a"


def finite(v: Any) -> bool:
  """A real, finite number (not a bool, None or NaN)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
  if not all(finite(v) for v in (bx, cx, by)):
    return None
  unit, scale = ("MiB", 1 << 20) if max(bx, cx) >= 4 << 20 else ("KiB", 1 << 10)
  bx, cx = bx / scale, cx / scale
  bound = report.quality_bound()
  ys = [by] + ([cy] if finite(cy) else []) + ([bound] if finite(bound) else [])
  higher, bounded = thresholds_lib.METRICS[metric]
  ylim = _padded(ys, bounded)
  chart = _Chart((0.0, max(bx, cx) * 1.18), ylim,
                 title=f"Size against {metric}")
  chart.axes(f"{'gzip ' if gzip else ''}size ({unit})", metric)
  t = report.thresholds
  max_size = (bx / t.min_compression_ratio
              if t.min_compression_ratio else chart.x1)
  if finite(bound):
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
  cand_below = finite(cy) and cy < by
  if finite(cy):
    chart.arrow((bx, by), (cx, cy), _MUTED)
    chart.point(cx, cy, color, f"candidate {cy:.4f}", shape="diamond",
                label_side="below" if cand_below else "above")
  chart.point(bx, by, _BASELINE_COLOR, f"baseline {by:.4f}",
              label_side="above" if cand_below or not finite(cy) or cy == by
              else "below")
  return chart.svg(f"Size against {metric} for the baseline and the candidate")


def search_svg(report: EvaluationReport) -> Optional[str]:
  """The Pruner's search: sparsity (x) against its metric (y), the gate line."""
  search = report.pruning_search or {}
  steps = [s for s in search.get("steps") or []
           if finite(s.get("sparsity")) and finite(s.get("metric"))]
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
           and finite(base) else None)
  ys = [s["metric"] for s in steps] + [v for v in (base, bound) if finite(v)]
  bounded = canonical is not None and thresholds_lib.METRICS[canonical][1]
  chart = _Chart((0.0, 1.0), _padded(ys, bounded),
                 title=f"Pruning search: sparsity against {name}")
  chart.axes("sparsity", name, xfmt=lambda v: f"{100 * v:.0f}%")
  # Line labels on the left: searches try the high sparsities on the right.
  if finite(base):
    chart.hline(base, _BASELINE_COLOR, f"baseline {base:.4f}", dash="2 3",
                label_at="left")
  if finite(bound):
    higher = thresholds_lib.higher_is_better(canonical)
    chart.hline(bound, _PASS_COLOR,
                f"gate {'≥' if higher else '≤'} {bound:.4f}", label_at="left")
  chosen = search.get("chosen_sparsity")
  if finite(chosen):
    chart.vline(chosen, _INK, f"chosen {100 * chosen:.0f}%", dash="2 3")
  chart.polyline([(s["sparsity"], s["metric"]) for s in steps], "#8a96a3")
  for s in steps:
    color = _PASS_COLOR if s.get("passed") else _FAIL_COLOR
    chart.point(s["sparsity"], s["metric"], color, r=5)
  return chart.svg(f"Pruning search: sparsity against {name}")


def pareto_front(points: Sequence[Tuple[float, float]], higher: bool
                 ) -> List[int]:
  """Indices of the points no other point beats on both axes (x smaller is
  better; y higher is better when ``higher``), in rising x."""
  order = sorted(range(len(points)),
                 key=lambda i: (points[i][0],
                                -points[i][1] if higher else points[i][1]))
  front, best = [], None
  for i in order:
    y = points[i][1]
    if best is None or (y > best if higher else y < best):
      front.append(i)
      best = y
  return front


def plan_svgs(report: EvaluationReport) -> List[Tuple[str, str]]:
  """The CompressionPlanner's candidates: the gate metric against raw size and
  against latency, the passing candidates' Pareto front drawn, the chosen one
  a diamond. [(svg, what it shows)]; [] without a plan."""
  plan = report.plan or {}
  cands = [c for c in plan.get("candidates") or [] if finite(c.get("metric"))]
  if not cands:
    return []
  metric = plan.get("metric_name") or report.metric
  try:
    higher, bounded = thresholds_lib.METRICS[
        thresholds_lib.canonical_metric(metric)]
  except (TypeError, ValueError):
    higher, bounded = True, False
  base = (plan.get("baseline") or {}).get("metric")
  bound = report.quality_bound(base) if finite(base) else None
  out = []
  for field, label, scale, unit in (("raw_bytes", "size", 1 << 10, "KiB"),
                                    ("latency_us", "latency", 1.0, "µs")):
    pts = [c for c in cands if finite(c.get(field))]
    if not pts:
      continue
    # Log scale: candidates span one to two orders of magnitude.
    xs = [math.log10(max(c[field] / scale, 1e-9)) for c in pts]
    ys = [c["metric"] for c in pts] + [v for v in (base, bound) if finite(v)]
    pad = max(0.05, (max(xs) - min(xs)) * 0.06)
    chart = _Chart((min(xs) - pad, max(xs) + pad), _padded(ys, bounded),
                   title=f"Plan: {metric} against {label} (Pareto front)")
    chart.axes(f"{label} ({unit}, log scale)", metric,
               xfmt=lambda v: f"{10 ** v:.3g}")
    if finite(base):
      chart.hline(base, _BASELINE_COLOR, f"baseline {base:.4f}", dash="2 3")
    if finite(bound):
      chart.hline(bound, _PASS_COLOR,
                  f"gate {'≥' if higher else '≤'} {bound:.4f}")
    passing = [i for i, c in enumerate(pts) if c.get("passed")]
    front = [passing[i] for i in pareto_front(
        [(xs[i], pts[i]["metric"]) for i in passing], higher)]
    if len(front) > 1:
      chart.polyline([(xs[i], pts[i]["metric"]) for i in front], _PASS_COLOR)
    for i, c in enumerate(pts):
      if c.get("index") == plan.get("chosen_index"):
        continue
      chart.point(xs[i], c["metric"], _PASS_COLOR if c.get("passed")
                  else _FAIL_COLOR, r=4, hollow=i not in front)
    for i, c in enumerate(pts):
      if c.get("index") == plan.get("chosen_index"):
        chart.point(xs[i], c["metric"], _INK,
                    f"chosen: {c.get('structure')} {c.get('mode')}",
                    shape="diamond", label_side="above")
    out.append((chart.svg(f"Plan candidates: {metric} against {label}"),
                label))
  return out
