"""Our side of the benchmark: the demo pipeline run with LocalDagRunner.

Every configuration is a run of ``pipelines.pipeline.create_pipeline`` into one
pipeline root and one ML Metadata file, so unchanged steps (ExampleGen, Trainer,
the Pruner when only the quantization changes) come from the cache and only the
changed steps run. After each run its executions, their wall times (ML
Metadata's execution timestamps) and their output artifacts are read back from
the newest ``pipeline_run`` context.

Example:

    runner = PipelineRunner("/tmp/bench", train_steps=600, prune_steps=300)
    first = runner.run("pruned_int8", quantization="int8")
    first.seconds, first.nodes["Pruner"].seconds
    first.uri("Quantizer", "quantized_model")
"""

import contextlib
import dataclasses
import glob
import os
import sys
import time
from typing import Any, Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from tfx_compression.components.common import side_files
from tfx_compression.pipelines import digits_data
from tfx_compression.pipelines import pipeline as pipeline_lib
from tfx_compression.pipelines import summary

_STATES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT,
                  metadata_store_pb2.Event.DECLARED_OUTPUT)


@dataclasses.dataclass
class NodeRecord:
  """One component's execution in a run."""
  state: str                              # COMPLETE, CACHED, FAILED ...
  seconds: float                          # from ML Metadata's timestamps
  outputs: Dict[str, List[Dict[str, Any]]]  # key -> [{"uri", **custom props}]
  execution_id: int = 0


@dataclasses.dataclass
class RunRecord:
  """A pipeline run: wall time around LocalDagRunner.run, and its executions."""
  name: str
  seconds: float
  nodes: Dict[str, NodeRecord]
  params: Dict[str, Any]

  def output(self, node: str, key: str) -> Optional[Dict[str, Any]]:
    rec = self.nodes.get(node)
    if rec is None or not rec.outputs.get(key):
      return None
    return rec.outputs[key][0]

  def uri(self, node: str, key: str) -> Optional[str]:
    out = self.output(node, key)
    return out["uri"] if out else None

  def states(self) -> Dict[str, str]:
    return {n: r.state for n, r in self.nodes.items()}

  def to_dict(self) -> Dict[str, Any]:
    return {"name": self.name, "seconds": self.seconds, "params": self.params,
            "nodes": {n: {"state": r.state, "seconds": r.seconds}
                      for n, r in self.nodes.items()}}


def newest_run(metadata_path: str, pipeline_name: str) -> Dict[str, NodeRecord]:
  """node id -> NodeRecord for the newest run of ``pipeline_name``."""
  store = summary.open_store(metadata_path)
  run = summary.newest_run_context(store, pipeline_name)
  if run is None:
    return {}
  executions = store.get_executions_by_context(run.id)
  events = store.get_events_by_execution_ids([e.id for e in executions])
  artifact_ids = sorted({ev.artifact_id for ev in events})
  artifacts = {a.id: a for a in store.get_artifacts_by_id(artifact_ids)}
  records = {}
  for e in executions:
    name = summary.node_id(store, e, pipeline_name)
    outputs: Dict[str, List[Dict[str, Any]]] = {}
    for ev in events:
      if ev.execution_id != e.id or ev.type not in _OUTPUT_EVENTS:
        continue
      key = ev.path.steps[0].key if ev.path.steps else "?"
      art = artifacts[ev.artifact_id]
      entry = {"uri": art.uri, "artifact_id": art.id, **summary.artifact_properties(art)}
      if entry not in outputs.setdefault(key, []):
        outputs[key].append(entry)
    seconds = (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3
    records[name] = NodeRecord(_STATES.get(e.last_known_state, "?"), seconds,
                               outputs, e.id)
  return records


def execution_seconds(metadata_path: str, artifact_id: int) -> Optional[float]:
  """Wall time of the COMPLETE execution that produced an artifact."""
  store = summary.open_store(metadata_path)
  events = store.get_events_by_artifact_ids([artifact_id])
  ids = [ev.execution_id for ev in events if ev.type in _OUTPUT_EVENTS]
  for e in store.get_executions_by_id(ids):
    if e.last_known_state == metadata_store_pb2.Execution.COMPLETE:
      return (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1e3
  return None


class PipelineRunner:
  """Runs configurations of the demo pipeline into one root and metadata."""

  def __init__(self, work_dir: str, pipeline_name: str = "digits_benchmark",
               **defaults):
    self.work_dir = os.path.abspath(work_dir)
    self.pipeline_name = pipeline_name
    self.defaults = dict(defaults)
    self.paths = dict(
        pipeline_root=os.path.join(self.work_dir, "pipeline_root"),
        metadata_path=os.path.join(self.work_dir, "metadata.sqlite"),
        serving_model_dir=os.path.join(self.work_dir, "serving_model"))
    self.data_root = digits_data.ensure_digits_csv(
        os.path.join(self.work_dir, "data"))
    self.runs: List[RunRecord] = []

  @property
  def metadata_path(self) -> str:
    return self.paths["metadata_path"]

  def run(self, name: str, **params) -> RunRecord:
    """One LocalDagRunner run with ``params`` over the defaults; timed."""
    from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
    merged = {**self.defaults, **params}
    pipe = pipeline_lib.create_pipeline(
        pipeline_name=self.pipeline_name, data_root=self.data_root,
        **self.paths, **merged)
    with stdout_to_stderr():
      start = time.perf_counter()
      tfx.orchestration.LocalDagRunner().run(pipe)
      seconds = time.perf_counter() - start
    record = RunRecord(name, seconds,
                       newest_run(self.metadata_path, self.pipeline_name),
                       {k: v for k, v in merged.items()
                        if isinstance(v, (int, float, str, type(None)))})
    self.runs.append(record)
    return record


@contextlib.contextmanager
def stdout_to_stderr():
  """Sends stdout (also of child processes, e.g. the Trainer module's wheel
  build) to stderr, so that stdout carries only the benchmark's table."""
  sys.stdout.flush()
  saved = os.dup(1)
  os.dup2(2, 1)
  try:
    yield
  finally:
    sys.stdout.flush()
    os.dup2(saved, 1)
    os.close(saved)


def find_tflite(uri: str) -> Optional[str]:
  """The .tflite file under a Quantizer output URI."""
  hits = sorted(glob.glob(os.path.join(uri, "**", "*.tflite"), recursive=True))
  return hits[0] if hits else None


def read_tflite(uri: str) -> bytes:
  path = find_tflite(uri)
  if path is None:
    raise FileNotFoundError(f"No .tflite file under {uri}.")
  with open(path, "rb") as f:
    return f.read()


def read_tflite_io(uri: str) -> Dict[str, Any]:
  """The tflite_io.json the Quantizer wrote beside its .tflite file."""
  path = find_tflite(uri)
  if path is None:
    raise FileNotFoundError(f"No .tflite file under {uri}.")
  io = side_files.read_tflite_io(path)
  if io is None:
    raise FileNotFoundError(f"No {side_files.TFLITE_IO} beside {path}.")
  return io


def float_tflite(model_uri: str) -> bytes:
  """A Model artifact (Keras SavedModel) as float TFLite, batch 1.

  The conversion the CompressionEvaluator uses for its baseline, so the
  "float TFLite model" every ratio refers to is the one our gate compares.
  """
  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.common import model_io
  from tfx_compression.components.compression_evaluator import evaluation
  # pylint: enable=g-import-not-at-top
  model = model_io.load_keras_model(model_io.serving_dir(model_uri))
  return evaluation.keras_to_float_tflite(model)
