"""The CompressionEvaluator's Beam job: eval files -> per-file stats -> totals.

:func:`compute_stats` lists the split's TFRecord files, spreads them over the
workers, and in each worker reads a file in batches, predicts with both models
(each loaded once per worker) and sums the sufficient statistics of
``common/metrics.py``; every field is an integer, so the totals do not depend on the
order in which a runner adds the files or the batches.

The job uses only Create, Reshuffle, ParDo and CombineGlobally without defaults,
and writes its one-line result from a ParDo: nothing that needs a runner to call
a DoFn's ``setup`` or ``finish_bundle``, or to support side inputs or Beam's file
sources. Beam's DaskRunner (2.59) has none of these, so the same job runs on it
(``dask_runner.py``) as on the DirectRunner, Dataflow, Flink and Spark. Reading a
whole file in one DoFn call costs no parallelism: Beam's TFRecord source cannot
split a file either.

Example:

    stats = compute_stats(beam.Pipeline(), patterns, decoder_spec,
                          {"baseline": base_src, "candidate": cand_src},
                          batch_size=256, top_k=5, work_dir="/tmp/w")
    stats["candidate"].count
"""

import collections
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import progress
from tfx_compression.components.common.metrics import MetricStats, batch_stats
from tfx_compression.components.compression_evaluator.predictors import ModelSource


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """What a worker needs to build the ExampleDecoder (picklable)."""
  schema: Any
  label_key: str
  inputs: Tuple[Tuple[str, Tuple[Optional[int], ...], str], ...]
  transform_dir: Optional[str] = None

  @classmethod
  def from_specs(cls, schema, label_key, input_specs, transform_dir=None):
    inputs = tuple((name, tuple(s.shape.as_list()), s.dtype.name)
                   for name, s in input_specs.items())
    return cls(schema, label_key, inputs, transform_dir)

  def build(self) -> features_lib.ExampleDecoder:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    specs = collections.OrderedDict(
        (name, tf.TensorSpec(shape, tf.as_dtype(dtype), name=name))
        for name, shape, dtype in self.inputs)
    return features_lib.ExampleDecoder(self.schema, self.label_key, specs,
                                       self.transform_dir)


class _LoadedModels:
  """The decoder and both predictors of one worker (weak-referenceable)."""

  def __init__(self, decoder_spec: DecoderSpec,
               sources: Mapping[str, ModelSource]):
    self.decoder = decoder_spec.build()
    self.predictors = {role: src.load() for role, src in sources.items()}


def merge_role_stats(accumulators) -> Dict[str, MetricStats]:
  """Adds {role: MetricStats} dicts; integer sums, order-independent."""
  out = {}
  for acc in accumulators:
    for role, stats in acc.items():
      out[role] = stats if role not in out else out[role].merge(stats)
  return out


def _stats_dofn_class():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class StatsDoFn(beam.DoFn):
    """Reads one record file in batches, predicts with every model."""

    def __init__(self, shared_handle, decoder_spec, sources, batch_size, top_k,
                 output_kinds, total_examples=None):
      self._shared = shared_handle
      self._total = total_examples
      self._progress = None
      self._decoder_spec = decoder_spec
      self._sources = dict(sources)
      self._batch_size = batch_size
      self._top_k = top_k
      self._kinds = dict(output_kinds or {})
      self._models = None

    def setup(self):
      self._load()

    def _load(self):
      if self._models is not None:
        return
      # Loaded once per worker process, shared by the DoFn instances in it.
      self._models = self._shared.acquire(
          lambda: _LoadedModels(self._decoder_spec, self._sources))
      if self._total:
        # Per worker: with several workers each reports its own share.
        self._progress = progress.Progress("evaluation", self._total,
                                           unit="examples")

    def process(self, path):
      # Also here: Beam 2.59's DaskRunner calls process() without setup().
      self._load()
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      records = tf.data.TFRecordDataset(
          path, compression_type=features_lib.compression_type([path]))
      totals = {}
      for serialized in records.batch(self._batch_size):
        totals = merge_role_stats([totals, self._batch_stats(serialized)])
        if self._progress is not None:
          self._progress.advance(int(serialized.shape[0]))
      if totals:
        yield totals

    def _batch_stats(self, serialized) -> Dict[str, MetricStats]:
      features, labels, present = self._models.decoder.decode_with_presence(
          serialized)
      features = {k: v.numpy() for k, v in features.items()}
      labels, present = labels.numpy(), present.numpy()
      return {role: batch_stats(p.predict(features), labels, self._top_k,
                                self._kinds.get(role), present)
              for role, p in self._models.predictors.items()}

  return StatsDoFn


def _merge_combine_fn():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class MergeStats(beam.CombineFn):
    """Adds per-file {role: MetricStats}; integer sums, order-independent."""

    def create_accumulator(self):
      return {}

    def add_input(self, acc, element):
      return merge_role_stats([acc, element])

    def merge_accumulators(self, accumulators):
      return merge_role_stats(accumulators)

    def extract_output(self, acc):
      return acc

  return MergeStats()


def _to_json(stats: Mapping[str, MetricStats]) -> str:
  return json.dumps({role: s.to_dict() for role, s in stats.items()})


def _write_result(stats: Mapping[str, MetricStats], path: str) -> None:
  """Writes the totals where the launcher reads them (a retry rewrites them)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  staged = path + ".incomplete"
  with tf.io.gfile.GFile(staged, "w") as f:
    f.write(_to_json(stats))
  tf.io.gfile.rename(staged, path, overwrite=True)


def record_files(file_patterns: Sequence[str]) -> List[str]:
  """The record files the patterns match, sorted, directories left out."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = []
  for pattern in file_patterns:
    files.extend(sorted(tf.io.gfile.glob(pattern)))
  return [f for f in files if not tf.io.gfile.isdir(f)]


def compute_stats(pipeline, file_patterns: Sequence[str],
                  decoder_spec: DecoderSpec,
                  sources: Mapping[str, ModelSource], batch_size: int,
                  top_k: int, work_dir: str,
                  output_kinds: Optional[Mapping[str, str]] = None,
                  total_examples: Optional[int] = None
                  ) -> Dict[str, MetricStats]:
  """Runs the Beam pipeline over the eval split; {role: total MetricStats}.

  File names -> Reshuffle (spreads the files over the workers) -> a DoFn that
  loads every model once per worker, reads its file in batches of
  ``batch_size`` and emits the file's stats -> CombineGlobally(sum) -> a
  one-line JSON file. Memory per worker is one batch plus the fixed-size
  statistics.

  Args:
    pipeline: a beam.Pipeline (the executor's, so beam_pipeline_args apply).
    file_patterns: the eval split's TFRecord file patterns (gzip detected).
    decoder_spec: how to decode examples into the models' features.
    sources: {role: ModelSource}.
    batch_size: examples per prediction batch.
    top_k: k of top-k accuracy.
    work_dir: a directory every worker can write (the execution's temporary
      directory on a remote runner) for the one-line result file.
    output_kinds: {role: 'probabilities' | 'logits'}; a role left out is
      decided per row.
    total_examples: the split's size, for progress reports (examples done of
      total, rate, time left); None reports none.

  Returns:
    {role: MetricStats}; empty when the split held no example.
  """
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.utils import shared  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  out_path = os.path.join(work_dir, "metric_stats.json")
  if tf.io.gfile.exists(out_path):
    tf.io.gfile.remove(out_path)  # a previous attempt's
  files = record_files(file_patterns)
  if not files:
    return {}
  with pipeline as p:
    _ = (p
         | "Files" >> beam.Create(files)
         | "Spread" >> beam.Reshuffle()
         | "Predict" >> beam.ParDo(_stats_dofn_class()(
             shared.Shared(), decoder_spec, sources, batch_size, top_k,
             output_kinds, total_examples))
         # Without defaults: a runner need not support the side input that
         # gives an empty input its default; no output reads as no example.
         | "Sum" >> beam.CombineGlobally(_merge_combine_fn()).without_defaults()
         | "Write" >> beam.Map(_write_result, out_path))
  if not tf.io.gfile.exists(out_path):
    return {}
  with tf.io.gfile.GFile(out_path) as f:
    payload = json.loads(f.read().strip() or "{}")
  return {role: MetricStats.from_dict(d) for role, d in payload.items()}
