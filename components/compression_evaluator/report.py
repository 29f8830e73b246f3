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
from tfx_compression.components.compression_evaluator import report_plots

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"
HTML_NAME = "report.html"

# ---------------------------------------------------------------------------
# Formatting.
# ---------------------------------------------------------------------------


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
  if not report_plots.finite(n):
    return "n/a"
  n = int(n)
  if n >= 1 << 20:
    return f"{n / (1 << 20):.2f} MiB ({n:,} B)"
  if n >= 1 << 10:
    return f"{n / (1 << 10):.1f} KiB ({n:,} B)"
  return f"{n} B"


def fmt_seconds(s: Any) -> str:
  if not report_plots.finite(s):
    return "n/a"
  if s < 1e-3:
    return f"{s * 1e6:.1f} µs"
  if s < 1:
    return f"{s * 1e3:.3f} ms"
  return f"{s:.3f} s"


def fmt_ratio(r: Any) -> str:
  return f"{r:.3f}×" if report_plots.finite(r) else "n/a"


def fmt_percent(f: Any) -> str:
  return f"{100 * f:.1f}%" if report_plots.finite(f) else "n/a"


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
    if report_plots.finite(b) and report_plots.finite(c):
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
  out += _plan_markdown(report.plan)
  return "\n".join(out).rstrip() + "\n"


def _plan_markdown(plan) -> List[str]:
  """The CompressionPlanner's candidates as a table, the chosen one marked."""
  if not plan or not plan.get("candidates"):
    return []
  out = ["## Compression plan", "",
         f"Objective: {plan.get('objective')}; chosen: candidate "
         f"{plan.get('chosen_index')}. Skipped: "
         + ("; ".join(f"{s.get('structure')} ({s.get('why')})"
                      for s in plan.get("skipped") or []) or "none") + ".", ""]
  out.append(_md_table(
      ["#", "structure", "sparsity", "mode", "metric", "bytes", "gzip bytes",
       "latency", "passed"],
      [(("**" if c.get("index") == plan.get("chosen_index") else "")
        + str(c.get("index")), str(c.get("structure")),
        fmt_value(c.get("sparsity"), 2), str(c.get("mode")),
        fmt_value(c.get("metric")), fmt_bytes(c.get("raw_bytes")),
        fmt_bytes(c.get("gzip_bytes")),
        fmt_seconds(c["latency_us"] / 1e6) if report_plots.finite(
            c.get("latency_us")) else "n/a",
        "yes" if c.get("passed") else f"no: {c.get('why_not')}")
       for c in plan["candidates"]]))
  out.append("")
  return out


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
  ex, sizes, sp = report.examples, report.sizes, report.sparsity
  blessed, metric = report.blessed, report.metric
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
<div class="cards">{_html_cards(report)}</div>
<section><h2>Thresholds</h2>{_html_thresholds(report)}</section>
{_html_plots(report)}
<section><h2>Metrics</h2>{_html_metrics(report)}</section>
<section><h2>Size</h2><p class="sub">Compared: {e(sizes.representation)}.
<code>min_compression_ratio</code> compares the {e(sizes.compression_measure)}
bytes. Baseline SavedModel: {e(fmt_bytes(sizes.baseline_saved_model_bytes))}.
</p>{_html_sizes(report)}</section>
<section><h2>Latency</h2>{_html_latency(report)}</section>
<section><h2>Sparsity</h2><p>Candidate {e(fmt_percent(sp.candidate))}
({e(sp.source)}); baseline {e(fmt_percent(sp.baseline))}.</p>
</section>
<section><h2>Models</h2>{_html_models(report)}
<details><summary>Configuration</summary><pre>{e(_config_json(report))}</pre></details>
</section>
</main></body></html>
"""


def _html_cards(report: EvaluationReport) -> str:
  """The four headline figures: metric, size, latency, sparsity."""
  e = html.escape
  sizes, lat, sp = report.sizes, report.latency, report.sparsity
  cards = [
      (report.metric, fmt_value(report.metric_value("candidate")),
       f"baseline {fmt_value(report.metric_value('baseline'))}; "
       f"drop {fmt_value(report.metric_drop)}"),
      ("size ratio", fmt_ratio(sizes.size_ratio),
       f"gzip {fmt_ratio(sizes.gzip_size_ratio)}"),
      ("latency ratio", fmt_ratio(lat.latency_ratio),
       f"{fmt_seconds(lat.candidate_seconds)} vs "
       f"{fmt_seconds(lat.baseline_seconds)}"),
      ("sparsity", fmt_percent(sp.candidate),
       f"baseline {fmt_percent(sp.baseline)}"),
  ]
  return "".join(
      f'<div class="card"><div class="k">{e(k)}</div><div class="v">{e(v)}'
      f'</div><div class="d">{e(d)}</div></div>' for k, v, d in cards)


def _html_thresholds(report: EvaluationReport) -> str:
  e = html.escape
  check_rows = [(f"<code>{e(n)}</code>", e(d), e(v), e(l), _chip(p))
                for n, d, v, l, p in _check_rows(report)]
  check_rows += [("<em>other</em>", e(r), "", "", _chip(False))
                 for r in report.reasons]
  return _table(["threshold", "what", "value", "limit", "result"],
                check_rows, num_cols=(2, 3))


def _html_metrics(report: EvaluationReport) -> str:
  """Every metric of both models (the gate's row marked), then the notes."""
  e = html.escape
  metric = report.metric
  metric_rows = _metric_rows(report)
  row_classes = ["gate" if (r[0] == metric or (
      metric == "top_k_accuracy" and r[0].startswith("top_"))) else ""
                 for r in metric_rows]
  table = _table(["metric", "baseline", "candidate", "change"],
                 [[e(c) for c in r] for r in metric_rows], row_classes,
                 num_cols=(1, 2, 3))
  notes = _prediction_notes(report)
  notes_html = ("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes)
                + "</ul>") if notes else ""
  return table + notes_html


def _html_sizes(report: EvaluationReport) -> str:
  e = html.escape
  sizes = report.sizes
  return _table(
      ["", "baseline", "candidate", "baseline / candidate"],
      [["bytes", e(fmt_bytes(sizes.baseline_bytes)),
        e(fmt_bytes(sizes.candidate_bytes)), e(fmt_ratio(sizes.size_ratio))],
       ["gzip bytes", e(fmt_bytes(sizes.baseline_gzip_bytes)),
        e(fmt_bytes(sizes.candidate_gzip_bytes)),
        e(fmt_ratio(sizes.gzip_size_ratio))]], num_cols=(1, 2, 3))


def _html_latency(report: EvaluationReport) -> str:
  e = html.escape
  lat = report.latency
  if not lat.samples:
    return "<p>Not measured (<code>latency_samples</code>=0).</p>"
  table = _table(
      ["", "baseline", "candidate", "candidate / baseline"],
      [["median per example", e(fmt_seconds(lat.baseline_seconds)),
        e(fmt_seconds(lat.candidate_seconds)),
        e(fmt_ratio(lat.latency_ratio))]], num_cols=(1, 2, 3))
  return table + (f"<p class='sub'>{e(lat.runtime)}; {lat.threads} "
                  f"thread(s); {lat.samples} examples timed per model after "
                  f"{lat.warmup} warm-up calls; the models take turns every "
                  f"{lat.block} example(s).</p>")


def _html_plots(report: EvaluationReport) -> str:
  """The plots section (size against metric, search, plan), or nothing."""
  plots = []
  svg = report_plots.size_metric_svg(report)
  if svg:
    plots.append(
        f"<figure>{svg}<figcaption>Baseline (circle) and candidate (diamond). "
        "The shaded region is what the thresholds accept.</figcaption></figure>")
  svg = report_plots.search_svg(report)
  if svg:
    plots.append(
        f"<figure>{svg}<figcaption>The Pruner's search: each step's sparsity "
        "and metric (green passed the gate, red did not).</figcaption></figure>")
  for svg, label in report_plots.plan_svgs(report):
    plots.append(
        f"<figure>{svg}<figcaption>The CompressionPlanner's candidates by "
        f"{label}: filled green on the Pareto front of those that passed, "
        "hollow green passed but dominated, red failed the gate; the diamond "
        "was chosen.</figcaption></figure>")
  return (f"<section><h2>Plots</h2><div class='plots'>{''.join(plots)}"
          "</div></section>") if plots else ""


def _html_models(report: EvaluationReport) -> str:
  """Both models' kinds and paths, and the upstream blessing if wired."""
  e = html.escape
  cand = report.models["candidate"]
  table = _table(
      ["", "kind", "path"],
      [["baseline", e(report.models["baseline"]["kind"]),
        f"<code>{e(str(report.models['baseline']['path']))}</code>"],
       ["candidate", e(cand["kind"] + (f" (preprocessing: {cand['preprocessing']})"
                                       if cand.get("preprocessing") else "")),
        f"<code>{e(str(cand['path']))}</code>"]])
  if report.baseline_blessed is None:
    return table
  upstream = "blessed" if report.baseline_blessed else "NOT blessed"
  return table + f"<p>Upstream blessing of the baseline: {upstream}.</p>"


def _config_json(report: EvaluationReport) -> str:
  return json.dumps(_sanitize(dict(report.config)), indent=2, sort_keys=True)


def render(report: EvaluationReport) -> Dict[str, str]:
  """{file name: content} of the three report files."""
  return {JSON_NAME: to_json(report), MARKDOWN_NAME: to_markdown(report),
          HTML_NAME: to_html(report)}
