"""Reads a finished run back from ML Metadata and prints what a user cares about."""

import json
import os
import pathlib
import shlex
import sys
from typing import Any, Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_compression.components.common.evaluation_report import EvaluationReport

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}


def artifact_properties(artifact) -> Dict[str, Any]:
  """An MLMD artifact's custom properties as a plain dict."""
  out = {}
  for key, value in artifact.custom_properties.items():
    kind = value.WhichOneof("value")
    out[key] = getattr(value, kind) if kind else None
  return out


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = metadata_path
  config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
  return metadata_store.MetadataStore(config)


def newest_run_context(store, pipeline_name: str):
  """The newest "pipeline_run" context holding executions of ``pipeline_name``."""
  pipeline_ctx = store.get_context_by_type_and_name("pipeline", pipeline_name)
  if pipeline_ctx is None:
    return None
  pipeline_execs = {e.id for e in store.get_executions_by_context(pipeline_ctx.id)}
  runs = [r for r in store.get_contexts_by_type("pipeline_run")
          if {e.id for e in store.get_executions_by_context(r.id)} & pipeline_execs]
  return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)) if runs else None


def node_id(store, execution, pipeline_name: str) -> str:
  """The node an execution ran, from its "node" context ("<pipeline>.<node id>")."""
  node_type = store.get_context_type("node").id
  prefix = f"{pipeline_name}."
  names = [c.name[len(prefix):] for c in store.get_contexts_by_execution(execution.id)
           if c.type_id == node_type and c.name.startswith(prefix)]
  return names[0] if names else str(execution.type_id)


def latest_run(store, pipeline_name: str) -> Dict[str, str]:
  """node id -> execution state ('COMPLETE', 'CACHED', 'FAILED'...) of the newest run."""
  run = newest_run_context(store, pipeline_name)
  if run is None:
    return {}
  return {node_id(store, e, pipeline_name):
              _STATES.get(e.last_known_state, str(e.last_known_state))
          for e in store.get_executions_by_context(run.id)}


def output_artifacts(store, pipeline_name: str, node: str,
                     type_name: str) -> List[Any]:
  """Live artifacts of ``type_name`` that ``node`` output, oldest first.

  Inputs are attributed to a node's context too, so outputs are told apart by
  their events.
  """
  ctx = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node}")
  if ctx is None:
    return []
  executions = [e.id for e in store.get_executions_by_context(ctx.id)]
  outputs = {ev.artifact_id for ev in store.get_events_by_execution_ids(executions)
             if ev.type == metadata_store_pb2.Event.OUTPUT}
  types = {t.id: t.name for t in store.get_artifact_types()}
  arts = [a for a in store.get_artifacts_by_id(list(outputs))
          if types.get(a.type_id) == type_name and
          a.state == metadata_store_pb2.Artifact.LIVE]
  return sorted(arts, key=lambda a: a.id)


def latest_artifact(store, pipeline_name: str, node: str,
                    type_name: str) -> Optional[Any]:
  """The newest live artifact of ``type_name`` that ``node`` output."""
  arts = output_artifacts(store, pipeline_name, node, type_name)
  return arts[-1] if arts else None


def collect(metadata_path: str, pipeline_name: str,
            serving_model_dir: str) -> Dict[str, Any]:
  """Everything the summary table shows, as a dict (also used by tests)."""
  store = open_store(metadata_path)
  out: Dict[str, Any] = {"executions": latest_run(store, pipeline_name)}
  for key, node, type_name in [
      ("baseline", "Trainer", "Model"),
      ("pruned", "Pruner", "Model"),
      ("quantized", "Quantizer", "Model"),
      ("planned", "CompressionPlanner", "Model"),
      ("blessing", "CompressionEvaluator", "ModelBlessing"),
      ("evaluation", "CompressionEvaluator", "ModelEvaluation"),
      ("pushed", "Pusher", "PushedModel"),
      ("pruner_run", "Pruner", "ModelRun"),
  ]:
    art = latest_artifact(store, pipeline_name, node, type_name)
    out[key] = None if art is None else {"uri": art.uri, **artifact_properties(art)}
  out["serving_model_dir"] = serving_model_dir
  out["report"] = None
  if out["evaluation"]:
    path = os.path.join(out["evaluation"]["uri"], "report.json")
    if os.path.exists(path):
      with open(path) as f:
        out["report"] = EvaluationReport.from_json(f.read())
  return out


def _fmt(value, kind="f"):
  if value is None:
    return "-"
  if kind == "pct":
    return f"{100 * float(value):.2f}%"
  if kind == "bytes":
    return f"{int(value):,}"
  return f"{float(value):.4f}"


def render(info: Dict[str, Any], log_path: Optional[str] = None) -> str:
  """The short table `make demo` ends with.

  Args:
    info: what :func:`collect` returns.
    log_path: the run's log file, named on the last line when given.
  """
  lines: List[str] = []
  ev = info.get("evaluation") or {}
  bl = info.get("blessing") or {}
  report: Optional[EvaluationReport] = info.get("report")
  sizes = report.sizes if report else None
  latency = report.latency if report else None
  metric = ev.get("metric") or bl.get("metric") or "accuracy"
  blessed = bl.get("blessed")
  gate = "-" if blessed is None else ("BLESSED" if blessed == 1 else "NOT BLESSED")
  channels = channel_counts(info.get("pruned") or {})
  if channels:
    # Weight zeros of the narrow model say nothing about channel pruning.
    column = "channels"
    structure = (f"{channels['before']:,}", f"{channels['kept']:,}")
  else:
    column = "sparsity"
    structure = (_fmt(0.0, "pct"), _fmt(ev.get("sparsity"), "pct"))
  rows = [
      ("baseline (Trainer)", ev.get(f"baseline_{metric}"),
       sizes and sizes.baseline_bytes, sizes and sizes.baseline_gzip_bytes,
       latency and latency.baseline_us, structure[0], "-"),
      ("compressed", ev.get(f"candidate_{metric}"),
       sizes and sizes.candidate_bytes, sizes and sizes.candidate_gzip_bytes,
       latency and latency.candidate_us, structure[1], gate),
  ]
  header = (f"{'model':<20} {metric:>9} {'bytes':>11} {'gzip bytes':>11} "
            f"{'latency us':>10} {column:>9}  gate")
  lines.append(header)
  lines.append("-" * len(header))
  for name, m, b, g, lat, s, g8 in rows:
    lat_text = "-" if lat is None else f"{float(lat):.1f}"
    lines.append(f"{name:<20} {_fmt(m):>9} {_fmt(b, 'bytes'):>11} "
                 f"{_fmt(g, 'bytes'):>11} {lat_text:>10} {s:>9}  {g8}")
  if sizes and sizes.representation:
    lines.append(f"(sizes and latency: {sizes.representation})")
  if channels:
    lines.append(channel_text(channels))
  if plan_text(info.get("planned") or {}):
    lines.append("plan: " + plan_text(info["planned"]))
  if ev.get("reason") or bl.get("reason"):
    lines.append("")
    lines.append(str(ev.get("reason") or bl.get("reason")))
  lines.append("")
  pushed = info.get("pushed") or {}
  if pushed.get("pushed") == 1:
    lines.append(f"pushed model:       {pushed.get('pushed_destination')}")
  else:
    lines.append(f"pushed model:       nothing pushed (gate not passed); "
                 f"destination {info.get('serving_model_dir')}")
  if ev.get("uri"):
    lines.append("compression report: " + file_url(
        os.path.join(ev["uri"], "report.html")))
  run = info.get("pruner_run") or {}
  if run.get("uri"):
    lines.append(f"fine-tuning curves: {tensorboard_command(run['uri'])}")
  states = info.get("executions") or {}
  if states:
    lines.append("steps this run:     " + ", ".join(
        f"{k}={v.lower()}" for k, v in sorted(states.items())))
  if log_path:
    lines.append(f"full log:           {log_path}")
  return "\n".join(lines)


def file_url(path: str) -> str:
  """``file:///abs/path`` (spaces and the like quoted), to open in a browser."""
  return pathlib.Path(os.path.abspath(path)).as_uri()


def tensorboard_command(logdir: str) -> str:
  """The command that shows ``logdir`` in TensorBoard, with this venv's binary."""
  binary = os.path.join(os.path.dirname(sys.executable), "tensorboard")
  if not os.path.exists(binary):
    binary = "tensorboard"
  else:
    relative = os.path.relpath(binary)
    binary = relative if not relative.startswith("..") else binary
  return f"{binary} --logdir {shlex.quote(logdir)}"


def channel_counts(pruned: Dict[str, Any]) -> Optional[Dict[str, Any]]:
  """Channels kept and before, parameters and MACs, for a channel-pruned model.

  None for the other structures (their summary is the weight sparsity).
  """
  if pruned.get("sparsity_structure") != "channels":
    return None
  try:
    kept = json.loads(pruned.get("channels_kept") or "{}")
    before = json.loads(pruned.get("channels_before") or "{}")
  except ValueError:
    return None
  if not kept or not before:
    return None
  return dict(kept=sum(int(v) for v in kept.values()),
              before=sum(int(before.get(k, v)) for k, v in kept.items()),
              layers=sorted(kept),
              params_before=pruned.get("params_before"),
              params_after=pruned.get("params_after"),
              macs_before=pruned.get("macs_before"),
              macs_after=pruned.get("macs_after"))


def channel_text(c: Dict[str, Any]) -> str:
  """``(channels: 96 of 384 kept in conv1, conv2, dense1; parameters ...)``."""
  share = c["kept"] / max(1, c["before"])
  parts = [f"channels: {c['kept']:,} of {c['before']:,} kept ({share:.0%}) in "
           + ", ".join(c["layers"])]
  for name, key in (("parameters", "params"), ("MACs", "macs")):
    if c.get(f"{key}_before") is not None and c.get(f"{key}_after") is not None:
      parts.append(f"{name} {int(c[key + '_before']):,} -> "
                   f"{int(c[key + '_after']):,}")
  return "(" + "; ".join(parts) + ")"


# One line per step, as the local runner prints it when a step ends.


def step_outcome(metadata_path: str, execution_id: int) -> Tuple[str, str]:
  """(state, key figure) of one execution: ('COMPLETE', 'sparsity 80.0% ...').

  The state is ML Metadata's ('COMPLETE', 'CACHED', ...); the figure is what a
  person looks at for that kind of component, read from its output artifacts, or
  '' when there is none.
  """
  store = open_store(metadata_path)
  execution = store.get_executions_by_id([execution_id])[0]
  state = _STATES.get(execution.last_known_state, str(execution.last_known_state))
  kind = store.get_execution_types_by_id([execution.type_id])[0].name
  outputs: Dict[str, Dict[str, Any]] = {}
  types = {t.id: t.name for t in store.get_artifact_types()}
  ids = [ev.artifact_id for ev in store.get_events_by_execution_ids([execution_id])
         if ev.type in (metadata_store_pb2.Event.OUTPUT,
                        metadata_store_pb2.Event.DECLARED_OUTPUT)]
  for art in store.get_artifacts_by_id(ids):
    outputs[types.get(art.type_id, "")] = {"uri": art.uri,
                                           **artifact_properties(art)}
  return state, key_figure(kind.rsplit(".", 1)[-1], outputs)


def key_figure(component: str, outputs: Dict[str, Dict[str, Any]]) -> str:
  """The figure that matters for ``component`` (a class name), from its outputs."""
  for suffix, figure in _FIGURES:
    if component.endswith(suffix):
      return figure(outputs)
  return ""


def _examples_figure(outputs) -> str:
  ex = outputs.get("Examples") or {}
  fingerprint = str(ex.get("input_fingerprint") or "")
  sizes = dict(part.split(":", 1) for part in fingerprint.split(",") if ":" in part)
  read = []
  if sizes.get("num_files"):
    read.append(f"{int(sizes['num_files']):,} file(s)")
  if sizes.get("total_bytes"):
    read.append(f"{int(sizes['total_bytes']):,} bytes")
  return " ".join(["read"] + read) if read else ""


def _statistics_figure(outputs) -> str:
  stats = outputs.get("ExampleStatistics") or {}
  uri = stats.get("uri")
  if not uri or not os.path.isdir(uri):
    return ""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  rows = []
  for name in sorted(os.listdir(uri), key=lambda n: (n != "Split-train", n)):
    path = os.path.join(uri, name, "FeatureStats.pb")
    if name.startswith("Split-") and os.path.exists(path):
      proto = statistics_pb2.DatasetFeatureStatisticsList()
      with open(path, "rb") as f:
        proto.ParseFromString(f.read())
      if proto.datasets:
        rows.append(f"{name[len('Split-'):]} {proto.datasets[0].num_examples:,}")
  return "rows: " + ", ".join(rows) if rows else ""


def _schema_figure(outputs) -> str:
  uri = (outputs.get("Schema") or {}).get("uri")
  path = os.path.join(uri or "", "schema.pbtxt")
  if not os.path.exists(path):
    return ""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  return f"{len(schema.feature)} features"


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def _trainer_figure(outputs) -> str:
  uri = (outputs.get("Model") or {}).get("uri")
  return f"model {_dir_bytes(uri):,} bytes" if uri and os.path.isdir(uri) else ""


def _pruner_figure(outputs) -> str:
  pruned = outputs.get("Model") or {}
  channels = channel_counts(pruned)
  if channels:
    text = channel_text(channels)[1:-1]
  elif pruned.get("sparsity") is not None:
    text = f"sparsity {_fmt(pruned['sparsity'], 'pct')}"
    if pruned.get("target_sparsity") is not None:
      text += f" (target {_fmt(pruned['target_sparsity'], 'pct')})"
  else:
    return ""
  if pruned.get("search_chosen_sparsity") is not None:
    text += (f"; search chose {_fmt(pruned['search_chosen_sparsity'], 'pct')} "
             f"after {pruned.get('search_steps_tried')} step(s)")
  metric = next((k[len("eval_"):] for k in ("eval_accuracy", "eval_loss")
                 if pruned.get(k) is not None), None)
  if metric and pruned.get(f"baseline_eval_{metric}") is not None:
    text += (f"; eval {metric} {_fmt(pruned[f'baseline_eval_{metric}'])} -> "
             f"{_fmt(pruned[f'eval_{metric}'])}")
  return text


def _quantizer_figure(outputs) -> str:
  model = outputs.get("Model") or {}
  if model.get("tflite_bytes") is None:
    return ""
  return (f"{model.get('quantization', '')} TFLite "
          f"{_fmt(model['tflite_bytes'], 'bytes')} bytes").strip()


def plan_text(model: Dict[str, Any]) -> str:
  """'chose channels 75% + int8 (packed) of 30 candidates, 23,928 bytes'."""
  if model.get("plan_structure") is None:
    return ""
  structure = model["plan_structure"]
  if structure != "none":
    structure += f" {_fmt(model.get('plan_sparsity'), 'pct')}"
  packed = " (packed)" if model.get("plan_packed") == 1 else ""
  return (f"chose {structure} + {model.get('plan_mode')}{packed} of "
          f"{model.get('plan_candidates')} candidates "
          f"({model.get('plan_objective')}), "
          f"{_fmt(model.get('plan_raw_bytes'), 'bytes')} bytes")


def _planner_figure(outputs) -> str:
  return plan_text(outputs.get("Model") or {})


def _gate_figure(outputs) -> str:
  blessing = outputs.get("ModelBlessing") or {}
  if blessing.get("blessed") is None:
    return ""
  verdict = "BLESSED" if blessing["blessed"] == 1 else "NOT BLESSED"
  metric = blessing.get("metric")
  if metric and blessing.get(f"baseline_{metric}") is not None:
    verdict += (f", {metric} {_fmt(blessing[f'baseline_{metric}'])} -> "
                f"{_fmt(blessing.get(f'candidate_{metric}'))}")
  return verdict


def _pusher_figure(outputs) -> str:
  pushed = outputs.get("PushedModel") or {}
  if pushed.get("pushed") == 1:
    return f"pushed to {pushed.get('pushed_destination')}"
  return "nothing pushed" if pushed else ""


_FIGURES = (
    ("ExampleGen", _examples_figure),
    ("StatisticsGen", _statistics_figure),
    ("SchemaGen", _schema_figure),
    ("Trainer", _trainer_figure),
    ("Pruner", _pruner_figure),
    ("Quantizer", _quantizer_figure),
    ("CompressionPlanner", _planner_figure),
    ("Evaluator", _gate_figure),  # the CompressionEvaluator and TFX's Evaluator
    ("Pusher", _pusher_figure),
)
