"""Failure behaviour end to end: the gate never leaks, same seed same model, crash re-runs.

Every variant shares one pipeline name, root and ML Metadata store, so ExampleGen,
StatisticsGen, SchemaGen and the Trainer run once and are taken from cache after.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tfx import v1 as tfx

from tfx_compression.components.common import features
from tfx_compression.components.common import model_io
from tfx_compression.components.pruner import search
from tfx_compression.pipelines import digits_data, pipeline as pipeline_lib, summary

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "failures"
FAST = dict(train_steps=300, prune_steps=100)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  d = tmp_path_factory.mktemp("failures")
  digits_data.ensure_digits_csv(str(d / "data"))
  return d


def make(workdir, serving, **kw):
  args = dict(FAST)
  args.update(kw)
  return pipeline_lib.create_pipeline(
      pipeline_name=NAME, pipeline_root=str(workdir / "root"),
      data_root=str(workdir / "data"), serving_model_dir=str(serving),
      metadata_path=str(workdir / "metadata.sqlite"), **args)


def pushed_files(serving):
  if not os.path.exists(serving):
    return []
  return [os.path.join(r, f) for r, _, fs in os.walk(serving) for f in fs]


# Each variant: component kwargs, and either "not_blessed" (the run completes
# with NOT_BLESSED) or the (exception, message) the failing executor raises.
LEAK_VARIANTS = {
    "accuracy floor cannot be met": (dict(min_value=1.01), "not_blessed"),
    "compression ratio cannot be met": (dict(min_compression_ratio=1000.0),
                                        "not_blessed"),
    "latency ratio cannot be met": (
        dict(evaluator_kwargs=dict(max_latency_ratio=0.001)), "not_blessed"),
    "evaluator error (no such eval split)": (
        dict(evaluator_kwargs=dict(eval_split="holdout")),
        (ValueError, r"`eval_split` names split 'holdout'.*Use one of those")),
    "pruner fails (label misspelled)": (
        dict(pruner_kwargs=dict(label_key="lable")),
        (features.DataError, r"`label_key`.*'lable'.*Set `label_key`")),
    "quantizer fails (no such train split)": (
        dict(quantizer_kwargs=dict(train_split="training")),
        (ValueError, r"`train_split` names split 'training'.*Use one of those")),
    "pruner search: even the first step fails": (
        dict(search_sparsities="0.5,0.7", min_value=1.01),
        (search.SearchError, r"The pruning search's first step already fails")),
}


@pytest.mark.parametrize("variant", list(LEAK_VARIANTS))
def test_the_gate_never_leaks(workdir, variant):
  kwargs, outcome = LEAK_VARIANTS[variant]
  serving = workdir / ("serving_" + variant.split()[0] + str(abs(hash(variant)) % 997))
  pipe = make(workdir, serving, **kwargs)
  if outcome != "not_blessed":
    error, message = outcome
    with pytest.raises(error, match=message) as raised:
      tfx.orchestration.LocalDagRunner().run(pipe)
    assert type(raised.value) is error  # not a subclass raised by another bug
  else:
    tfx.orchestration.LocalDagRunner().run(pipe)
    info = summary.collect(str(workdir / "metadata.sqlite"), NAME, str(serving))
    assert info["blessing"]["blessed"] == 0
    assert info["pushed"]["pushed"] == 0
    assert info["report"].verdict.startswith("NOT BLESSED")
  assert pushed_files(serving) == [], f"{variant}: something was pushed"


def _pruned_models(workdir):
  store = summary.open_store(str(workdir / "metadata.sqlite"))
  return summary.output_artifacts(store, NAME, "Pruner", "Model")


def test_same_seed_same_mask_same_accuracy(workdir):
  results = []
  for _ in range(2):
    serving = workdir / "serving_determinism"
    pipe = make(workdir, serving, enable_cache=False)
    tfx.orchestration.LocalDagRunner().run(pipe)
    info = summary.collect(str(workdir / "metadata.sqlite"), NAME, str(serving))
    results.append(info)
  first, second = _pruned_models(workdir)[-2:]
  assert first.uri != second.uri
  a = model_io.load_keras_model(model_io.serving_dir(first.uri)).get_weights()
  b = model_io.load_keras_model(model_io.serving_dir(second.uri)).get_weights()
  for wa, wb in zip(a, b):
    np.testing.assert_array_equal(wa == 0, wb == 0)  # the same mask
    np.testing.assert_array_equal(wa, wb)  # and the same weights
  sparsity = [p.custom_properties["sparsity"].double_value for p in (first, second)]
  assert sparsity[0] == sparsity[1]
  assert (results[0]["evaluation"]["candidate_accuracy"] ==
          results[1]["evaluation"]["candidate_accuracy"])
  assert (results[0]["evaluation"]["baseline_accuracy"] ==
          results[1]["evaluation"]["baseline_accuracy"])


def test_killed_in_the_pruner_then_rerun_completes(tmp_path):
  """SIGKILL while the Pruner runs; the same command then completes from cache."""
  out = tmp_path / "crash"
  cmd = [sys.executable, "-m", "tfx_compression.pipelines.local_runner", "--output-dir", str(out),
         "--train-steps", "300", "--prune-steps", "2000"]
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  pruner_dir = out / "pipeline_root" / "Pruner" / "pruned_model"
  deadline = time.time() + 600
  while time.time() < deadline and not pruner_dir.exists():
    assert proc.poll() is None, "the run ended before the Pruner started"
    time.sleep(0.5)
  assert pruner_dir.exists(), "the Pruner never started"
  time.sleep(8)  # well inside its 2000 fine-tuning steps
  assert proc.poll() is None, "the Pruner finished before it could be killed"
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  killed = [pruner_dir / d for d in os.listdir(pruner_dir)]
  assert killed and not any((d / "Format-Serving").exists() for d in killed)

  rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  info = summary.collect(str(out / "metadata.sqlite"), "digits_compression",
                         str(out / "serving_model"))
  states = info["executions"]
  for node in ("CsvExampleGen", "StatisticsGen", "SchemaGen", "Trainer"):
    assert states[node] == "CACHED", (node, states)
  for node in ("Pruner", "Quantizer", "CompressionEvaluator", "Pusher"):
    assert states[node] == "COMPLETE", (node, states)
  # The Quantizer read the re-run's finished model, not the killed one's output.
  new_pruned = info["pruned"]["uri"]
  assert os.path.exists(os.path.join(new_pruned, "Format-Serving", "saved_model.pb"))
  assert all(str(d) != new_pruned for d in killed)
  store = summary.open_store(str(out / "metadata.sqlite"))
  q_ctx = store.get_context_by_type_and_name("node", "digits_compression.Quantizer")
  q_exec = max(store.get_executions_by_context(q_ctx.id), key=lambda e: e.id)
  inputs = [ev.artifact_id for ev in store.get_events_by_execution_ids([q_exec.id])
            if ev.type == ev.INPUT]
  used = {a.uri for a in store.get_artifacts_by_id(inputs)}
  assert new_pruned in used
  assert info["pushed"]["pushed"] == 1
