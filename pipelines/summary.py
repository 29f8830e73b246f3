"""Reads a finished run back from ML Metadata and prints what a user cares about."""

import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

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
      ("blessing", "CompressionEvaluator", "ModelBlessing"),
      ("evaluation", "CompressionEvaluator", "ModelEvaluation"),
      ("pushed", "Pusher", "PushedModel"),
  ]:
    art = latest_artifact(store, pipeline_name, node, type_name)
    out[key] = None if art is None else {"uri": art.uri, **artifact_properties(art)}
  out["serving_model_dir"] = serving_model_dir
  out["report"] = None
  if out["evaluation"]:
    path = os.path.join(out["evaluation"]["uri"], "report.json")
    if os.path.exists(path):
      with open(path) as f:
        out["report"] = json.load(f)
  return out


def _fmt(value, kind="f"):
  if value is None:
    return "-"
  if kind == "pct":
    return f"{100 * float(value):.2f}%"
  if kind == "bytes":
    return f"{int(value):,}"
  return f"{float(value):.4f}"


def render(info: Dict[str, Any]) -> str:
  """The short table `make demo` ends with."""
  lines: List[str] = []
  ev = info.get("evaluation") or {}
  bl = info.get("blessing") or {}
  report = info.get("report") or {}
  sizes = report.get("sizes") or {}
  latency = report.get("latency") or {}
  metric = ev.get("metric") or bl.get("metric") or "accuracy"
  blessed = bl.get("blessed")
  gate = "-" if blessed is None else ("BLESSED" if blessed == 1 else "NOT BLESSED")
  rows = [
      ("baseline (Trainer)", ev.get(f"baseline_{metric}"),
       sizes.get("baseline_bytes"), sizes.get("baseline_gzip_bytes"),
       latency.get("baseline_us") or _us(latency.get("baseline_seconds")),
       0.0, "-"),
      ("compressed", ev.get(f"candidate_{metric}"), sizes.get("candidate_bytes"),
       sizes.get("candidate_gzip_bytes"),
       latency.get("candidate_us") or _us(latency.get("candidate_seconds")),
       ev.get("sparsity"), gate),
  ]
  header = (f"{'model':<20} {metric:>9} {'bytes':>11} {'gzip bytes':>11} "
            f"{'latency us':>10} {'sparsity':>9}  gate")
  lines.append(header)
  lines.append("-" * len(header))
  for name, m, b, g, lat, s, g8 in rows:
    lat_text = "-" if lat is None else f"{float(lat):.1f}"
    lines.append(f"{name:<20} {_fmt(m):>9} {_fmt(b, 'bytes'):>11} "
                 f"{_fmt(g, 'bytes'):>11} {lat_text:>10} {_fmt(s, 'pct'):>9}  {g8}")
  if sizes.get("representation"):
    lines.append(f"(sizes and latency: {sizes['representation']})")
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
    lines.append(f"compression report: {os.path.join(ev['uri'], 'report.html')}")
  states = info.get("executions") or {}
  if states:
    lines.append("steps this run:     " + ", ".join(
        f"{k}={v.lower()}" for k, v in sorted(states.items())))
  return "\n".join(lines)


def _us(seconds):
  return None if seconds is None else float(seconds) * 1e6
