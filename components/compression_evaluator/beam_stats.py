"""The CompressionEvaluator's Beam job: eval split -> per-batch stats -> totals.

:func:`compute_stats` reads the split's TFRecords, batches them, predicts with both
models (each loaded once per worker) and sums the sufficient statistics of
``common/metrics.py``; every field is an integer, so the totals do not depend on the
order in which a runner adds the batches.

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
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

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


def _stats_dofn_class():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class StatsDoFn(beam.DoFn):
    """Decodes a batch of serialized examples, predicts with every model."""

    def __init__(self, shared_handle, decoder_spec, sources, top_k,
                 output_kinds, total_examples=None):
      self._shared = shared_handle
      self._total = total_examples
      self._progress = None
      self._decoder_spec = decoder_spec
      self._sources = dict(sources)
      self._top_k = top_k
      self._kinds = dict(output_kinds or {})
      self._models = None

    def setup(self):
      # Loaded once per worker process, shared by the DoFn instances in it.
      self._models = self._shared.acquire(
          lambda: _LoadedModels(self._decoder_spec, self._sources))
      if self._total:
        # Per worker: with several workers each reports its own share.
        self._progress = progress.Progress("evaluation", self._total,
                                           unit="examples")

    def process(self, batch):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      features, labels, present = self._models.decoder.decode_with_presence(
          tf.constant(list(batch), dtype=tf.string))
      features = {k: v.numpy() for k, v in features.items()}
      labels, present = labels.numpy(), present.numpy()
      stats = {role: batch_stats(p.predict(features), labels, self._top_k,
                                 self._kinds.get(role), present)
               for role, p in self._models.predictors.items()}
      if self._progress is not None:
        self._progress.advance(len(batch))
      yield stats

  return StatsDoFn


def _merge_combine_fn():
  import apache_beam as beam  # pylint: disable=g-import-not-at-top

  class MergeStats(beam.CombineFn):
    """Adds per-batch {role: MetricStats}; integer sums, order-independent."""

    def create_accumulator(self):
      return {}

    def add_input(self, acc, element):
      return self.merge_accumulators([acc, element])

    def merge_accumulators(self, accumulators):
      out = {}
      for acc in accumulators:
        for role, stats in acc.items():
          out[role] = stats if role not in out else out[role].merge(stats)
      return out

    def extract_output(self, acc):
      return acc

  return MergeStats()


def _to_json(stats: Mapping[str, MetricStats]) -> str:
  return json.dumps({role: s.to_dict() for role, s in stats.items()})


def compute_stats(pipeline, file_patterns: Sequence[str],
                  decoder_spec: DecoderSpec,
                  sources: Mapping[str, ModelSource], batch_size: int,
                  top_k: int, work_dir: str,
                  output_kinds: Optional[Mapping[str, str]] = None,
                  total_examples: Optional[int] = None
                  ) -> Dict[str, MetricStats]:
  """Runs the Beam pipeline over the eval split; {role: total MetricStats}.

  TFRecords -> BatchElements(batch_size) -> a DoFn that loads every model once
  per worker and emits each batch's stats -> CombineGlobally(sum). Memory per
  worker is one batch plus the fixed-size statistics.

  Args:
    pipeline: a beam.Pipeline (the executor's, so beam_pipeline_args apply).
    file_patterns: the eval split's TFRecord file patterns (gzip detected).
    decoder_spec: how to decode examples into the models' features.
    sources: {role: ModelSource}.
    batch_size: examples per prediction batch.
    top_k: k of top-k accuracy.
    work_dir: a local or remote directory for the one-line result file.
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
  with pipeline as p:
    reads = [p | f"Read[{i}]" >> beam.io.ReadFromTFRecord(pattern)
             for i, pattern in enumerate(file_patterns)]
    records = reads[0] if len(reads) == 1 else reads | beam.Flatten()
    _ = (records
         | "Batch" >> beam.BatchElements(min_batch_size=batch_size,
                                         max_batch_size=batch_size)
         | "Predict" >> beam.ParDo(_stats_dofn_class()(
             shared.Shared(), decoder_spec, sources, top_k, output_kinds,
             total_examples))
         | "Sum" >> beam.CombineGlobally(_merge_combine_fn())
         | "ToJson" >> beam.Map(_to_json)
         | "Write" >> beam.io.WriteToText(out_path, shard_name_template="",
                                          num_shards=1))
  with tf.io.gfile.GFile(out_path) as f:
    payload = json.loads(f.read().strip() or "{}")
  return {role: MetricStats.from_dict(d) for role, d in payload.items()}
