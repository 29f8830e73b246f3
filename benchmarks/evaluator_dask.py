"""The CompressionEvaluator's Beam job on a local Dask cluster beside the DirectRunner.

The digits eval split (599 examples) is written as ``--shards`` gzip files; the
demo CNN (trained ``--steps`` steps) is the baseline and a noisy copy of it the
candidate. The executor runs twice on the same artifacts: with no Beam arguments
(the in-memory DirectRunner) and with the Dask runner on a
``distributed.LocalCluster`` of ``--workers`` processes, its arguments given
through TFX's ``BaseBeamExecutor.Context`` as LocalDagRunner gives them. Prints
each run's time, its figures, whether every report section and the job's
per-class totals (``metric_stats.json``) are identical, and the tasks each Dask
worker ran.

    .venv/bin/python -m benchmarks.evaluator_dask [--shards 4] [--workers 2] \\
        [--out /tmp/dask.json]
"""

import argparse
import collections
import glob
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Dict, List, Optional

DASK_RUNNER = ("tfx_compression.components.compression_evaluator.dask_runner."
               "DaskRunner")


def _shard_eval_split(examples_uri: str, shards: int) -> int:
  """Rewrites the one eval file as ``shards`` files; returns the record count."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (path,) = glob.glob(os.path.join(examples_uri, "Split-eval", "*"))
  records = list(tf.data.TFRecordDataset(
      path, compression_type="GZIP").as_numpy_iterator())
  os.remove(path)
  for i in range(shards):
    name = f"data_tfrecord-{i:05d}-of-{shards:05d}.gz"
    with tf.io.TFRecordWriter(os.path.join(examples_uri, "Split-eval", name),
                              options="GZIP") as w:
      for record in records[i::shards]:
        w.write(record)
  return len(records)


def _artifacts(root: str, shards: int, steps: int):
  from tests import fixtures  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  examples = fixtures.write_examples(root)
  count = _shard_eval_split(examples.uri, shards)
  schema = fixtures.write_schema(root)
  model = fixtures.train_digits_model(steps=steps)
  baseline = fixtures.save_trainer_model(model, root, "baseline")
  noisy = keras.models.clone_model(model)
  rng = np.random.default_rng(0)
  noisy.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype)
                     for w in model.get_weights()])
  candidate = fixtures.save_trainer_model(noisy, root, "candidate")
  return examples, schema, baseline, candidate, count


def _run(root: str, inputs: Dict[str, Any], batch_size: int,
         beam_args: Optional[List[str]]) -> Dict[str, Any]:
  """One executor run; its report, the job's totals and the time it took."""
  from tfx.dsl.components.base import base_beam_executor  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.compression_evaluator import executor  # pylint: disable=g-import-not-at-top
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=beam_args, tmp_dir=os.path.join(root, "tmp"),
      unique_id="1")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = os.path.join(root, "blessing")
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = os.path.join(root, "evaluation")
  os.makedirs(blessing.uri)
  started = time.time()
  executor.Executor(context).Do(
      {k: [v] for k, v in inputs.items()},
      {"blessing": [blessing], "evaluation": [evaluation]},
      {"label_key": "label", "max_drop": 0.01, "latency_samples": 0,
       "batch_size": batch_size})
  seconds = time.time() - started
  with open(os.path.join(evaluation.uri, "report.json")) as f:
    report = json.load(f)
  with open(os.path.join(context.get_tmp_path(), "compression_evaluator",
                         "metric_stats.json")) as f:
    totals = json.load(f)
  return {"seconds": seconds, "report": report, "totals": totals}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shards", type=int, default=4)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--out", default=None, help="write the figures as JSON")
  args = parser.parse_args(argv)
  import distributed  # pylint: disable=g-import-not-at-top

  root = tempfile.mkdtemp(prefix="evaluator-dask-")
  try:
    examples, schema, baseline, candidate, count = _artifacts(
        root, args.shards, args.steps)
    inputs = {"baseline_model": baseline, "candidate_model": candidate,
              "examples": examples, "schema": schema}
    direct = _run(os.path.join(root, "direct"), inputs, args.batch_size, None)
    started = time.time()
    with distributed.LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True,
        dashboard_address=None, silence_logs=logging.WARNING) as cluster:
      cluster_start = time.time() - started
      with distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as tasks:
          dask = _run(os.path.join(root, "dask"), inputs, args.batch_size,
                      [f"--runner={DASK_RUNNER}",
                       f"--dask_client_address={cluster.scheduler_address}"])
  finally:
    shutil.rmtree(root, ignore_errors=True)  # models, examples, outputs
  per_worker = collections.Counter(t["worker"] for t in tasks.data)
  differing = sorted(k for k in direct["report"]
                     if dask["report"].get(k) != direct["report"][k])
  figures = {
      "examples": count, "shards": args.shards, "workers": args.workers,
      "direct_seconds": round(direct["seconds"], 1),
      "dask_seconds": round(dask["seconds"], 1),
      "cluster_start_seconds": round(cluster_start, 1),
      "accuracy": {role: dask["report"]["metrics"][role]["accuracy"]
                   for role in ("baseline", "candidate")},
      "counted": dask["report"]["examples"]["counted"],
      "report_sections_differing": differing,
      "totals_identical": dask["totals"] == direct["totals"],
      "tasks_per_worker": sorted(per_worker.values(), reverse=True),
      "load_average": os.getloadavg()[0],
  }
  print(f"{'runner':<28} {'Do (s)':>7}  accuracy base/cand  counted")
  for name, run in (("DirectRunner (in memory)", direct),
                    (f"Dask, {args.workers} processes", dask)):
    m = run["report"]["metrics"]
    print(f"{name:<28} {run['seconds']:7.1f}  "
          f"{m['baseline']['accuracy']:.4f} / {m['candidate']['accuracy']:.4f}"
          f"   {run['report']['examples']['counted']}")
  print(f"report sections differing: {differing or 'none'}; per-class totals "
        f"identical: {figures['totals_identical']}; tasks per worker: "
        f"{figures['tasks_per_worker']}; cluster start "
        f"{figures['cluster_start_seconds']} s; load average "
        f"{figures['load_average']:.1f}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(figures, f, indent=1)
  return figures


if __name__ == "__main__":  # the cluster's worker processes import this module
  main()
