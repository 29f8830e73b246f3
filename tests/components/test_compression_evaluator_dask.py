"""The CompressionEvaluator's Beam job on a dask.distributed cluster of 2 processes.

The executor is given the Dask runner the way TFX gives a component its
beam_pipeline_args (so TFX adds its --labels and --extra_package), and must write
the same report figures as the DirectRunner on the same data.
"""

import glob
import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from apache_beam.options.pipeline_options import PipelineOptions
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts

from tfx_compression.components.compression_evaluator import executor
from tests import fixtures

distributed = pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed: `pip install -e .[dask]` (the "
    "Makefile's install does) to run the evaluator on the Dask runner")
# Imported only once dask is known to be there (Beam's module needs it).
from tfx_compression.components.compression_evaluator import dask_runner  # noqa: E402  pylint: disable=g-import-not-at-top,g-bad-import-order

SHARDS = 4  # eval files: the job spreads files over the workers
# Beam >= 2.6x's DaskRunner takes --dask_npartitions / --dask_partition_size.
_BEAM_PARTITIONS = "npartitions" in dask_runner.beam_dask.DaskOptions(
    []).get_all_options()
# What the report says about the models and the data, not about the run.
FIGURES = ("metrics", "examples", "sizes", "sparsity", "metric_drop", "blessed",
           "verdict", "reasons", "checks")


def test_only_the_dask_options_reach_the_client():
  options = PipelineOptions([
      f"--runner={dask_runner.FULL_NAME}",
      "--dask_client_address=tcp://127.0.0.1:8786",
      "--dask_connection_limit=8", "--labels=tfx_executor=x",
      "--extra_package=/tmp/tfx_ephemeral.tar.gz"])
  expected = {"address": "tcp://127.0.0.1:8786", "connection_limit": 8}
  if _BEAM_PARTITIONS:  # One eval file per partition unless told otherwise.
    expected["partition_size"] = 1
  assert dask_runner.dask_only_options(options).get_all_options(
      drop_default=True) == expected


def test_the_users_partitions_are_kept():
  if not _BEAM_PARTITIONS:
    pytest.skip("this Beam's DaskRunner has no --dask_npartitions (Beam 2.59 "
                "puts one element in each partition)")
  for arg, want in (("--dask_npartitions=3", {"npartitions": 3}),
                    ("--dask_partition_size=16", {"partition_size": 16})):
    options = PipelineOptions([f"--runner={dask_runner.FULL_NAME}", arg])
    assert dask_runner.dask_only_options(options).get_all_options(
        drop_default=True) == want


@pytest.fixture(scope="module")
def cluster():
  """A local scheduler and 2 worker processes of one thread each."""
  with distributed.LocalCluster(
      n_workers=2, threads_per_worker=1, processes=True,
      dashboard_address=None, silence_logs=logging.WARNING) as local:
    with distributed.Client(local) as client:
      yield local, client


@pytest.fixture(scope="module")
def sharded_examples(tmp_path_factory):
  """The digits Examples with the eval split written as SHARDS files."""
  examples = fixtures.write_examples(str(tmp_path_factory.mktemp("sharded")))
  (path,) = glob.glob(os.path.join(examples.uri, "Split-eval", "*"))
  records = list(tf.data.TFRecordDataset(
      path, compression_type="GZIP").as_numpy_iterator())
  os.remove(path)
  for i in range(SHARDS):
    name = f"data_tfrecord-{i:05d}-of-{SHARDS:05d}.gz"
    with tf.io.TFRecordWriter(os.path.join(examples.uri, "Split-eval", name),
                              options="GZIP") as w:
      for record in records[i::SHARDS]:
        w.write(record)
  return examples, len(records)


def _run(root, baseline, candidate, examples, schema, beam_args=None):
  """Runs the executor; returns (report.json, the job's metric_stats.json)."""
  context = base_beam_executor.BaseBeamExecutor.Context(
      beam_pipeline_args=beam_args, tmp_dir=os.path.join(root, "tmp"),
      unique_id="1")
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = os.path.join(root, "blessing")
  evaluation = standard_artifacts.ModelEvaluation()
  evaluation.uri = os.path.join(root, "evaluation")
  os.makedirs(blessing.uri)
  executor.Executor(context).Do(
      {"baseline_model": [baseline], "candidate_model": [candidate],
       "examples": [examples], "schema": [schema]},
      {"blessing": [blessing], "evaluation": [evaluation]},
      {"label_key": "label", "max_drop": 0.01, "latency_samples": 0,
       "batch_size": 64})
  with open(os.path.join(evaluation.uri, "report.json")) as f:
    report = json.load(f)
  # The per-class totals the metrics come from (confusion matrix, histograms).
  with open(os.path.join(context.get_tmp_path(), "compression_evaluator",
                         "metric_stats.json")) as f:
    return report, json.load(f)


def test_dask_runner_gives_the_direct_runners_figures(
    tmp_path, cluster, sharded_examples, model_artifact, trained_model,
    schema_artifact):
  local, client = cluster
  examples, count = sharded_examples
  noisy = keras.models.clone_model(trained_model)
  rng = np.random.default_rng(0)
  noisy.set_weights([w + rng.normal(0, 0.02, w.shape).astype(w.dtype)
                     for w in trained_model.get_weights()])
  candidate = fixtures.save_trainer_model(noisy, str(tmp_path), "noisy")
  direct, direct_stats = _run(str(tmp_path / "direct"), model_artifact,
                              candidate, examples, schema_artifact)
  # As TFX gives a component its beam_pipeline_args (it adds --labels and
  # --extra_package).
  with distributed.get_task_stream(client) as tasks:
    on_dask, dask_stats = _run(
        str(tmp_path / "dask"), model_artifact, candidate, examples,
        schema_artifact,
        [f"--runner={dask_runner.FULL_NAME}",
         f"--dask_client_address={local.scheduler_address}"])
  # Both worker processes ran parts of the job.
  assert {t["worker"] for t in tasks.data} == set(
      client.scheduler_info()["workers"])
  assert direct["examples"]["count"] == count
  assert (direct["metrics"]["baseline"]["accuracy"]
          != direct["metrics"]["candidate"]["accuracy"])
  assert {k: on_dask[k] for k in FIGURES} == {k: direct[k] for k in FIGURES}
  assert dask_stats == direct_stats
