"""The CompressionEvaluator's TFX-free core: predictions -> metrics -> decision.

Three layers, each usable and tested on its own:

* **Metrics from sufficient statistics** (in components/common/metrics.py, shared
  with the Pruner's search). :func:`batch_stats` turns one batch of
  model outputs and labels into a :class:`MetricStats` (confusion matrix,
  crossentropy sum, top-k hits, per-class score histograms); stats of batches
  add up with :meth:`MetricStats.merge`, and :func:`metrics_from_stats` reads
  accuracy, precision, recall, F1 (macro; class 1 for binary models), AUC
  (one-vs-rest macro), top-k accuracy and crossentropy off the total. Memory
  is fixed by the number of classes, never by the number of examples, and
  every field is an integer, so the totals are identical whatever the order
  in which a runner adds the batches.
* **The decision.** :func:`decide` applies the shared GateThresholds and the
  reasons no threshold covers (NaN predictions, an unblessed baseline).
* **Measuring models.** ``predictors.py`` loads the models and predicts,
  ``beam_stats.py`` runs the Beam job over the eval split, ``latency.py`` times
  both models the same way; :func:`evaluate` ties it all together into the
  report's data.

Example:

    gate = GateThresholds(max_drop=0.01)
    decide(gate, {"accuracy": 0.95}, {"accuracy": 0.90}).blessed  # False
"""

import dataclasses
import math
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.common import evaluation_report as report_types
from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import model_io
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.common import tflite_runtime
from tfx_compression.components.common.metrics import (  # pylint: disable=g-multiple-import
    MetricStats, detect_output_kind, metrics_from_stats)
from tfx_compression.components.compression_evaluator import beam_stats
from tfx_compression.components.compression_evaluator import latency as latency_lib
from tfx_compression.components.compression_evaluator import predictors
# The names other modules and tests used from here before the split.
from tfx_compression.components.compression_evaluator.predictors import (  # noqa: F401  pylint: disable=g-multiple-import,unused-import
    EvaluationError, KerasPredictor, ModelSource, TFLitePredictor,
    keras_to_float_tflite, output_kind_from_model)

ROLES = ("baseline", "candidate")


# Metrics + thresholds -> decision.
# ---------------------------------------------------------------------------

BASELINE_NOT_BLESSED = "the baseline model was not blessed"


@dataclasses.dataclass(frozen=True)
class Decision:
  """The gate's outcome: blessed or not, every check, and one sentence why."""
  blessed: bool
  checks: Tuple[thresholds_lib.ThresholdCheck, ...]
  reasons: Tuple[str, ...]  # reasons outside the thresholds
  verdict: str

  def to_dict(self) -> Dict[str, Any]:
    return {"blessed": self.blessed, "verdict": self.verdict,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks]}


def decide(gate: thresholds_lib.GateThresholds,
           baseline_metrics: Mapping[str, float],
           candidate_metrics: Mapping[str, float],
           compression_ratio: Optional[float] = None,
           latency_ratio: Optional[float] = None,
           *,
           baseline_nonfinite: int = 0,
           candidate_nonfinite: int = 0,
           examples: Optional[int] = None,
           baseline_blessed: Optional[bool] = None,
           baseline_blessing_problem: Optional[str] = None,
           counted: Optional[int] = None,
           min_examples: int = 0,
           chance_accuracy: Optional[float] = None) -> Decision:
  """Blessed only if every threshold holds and nothing else is wrong.

  Args:
    gate: the thresholds.
    baseline_metrics, candidate_metrics: metric name -> value.
    compression_ratio: baseline bytes / candidate bytes (None: not measured).
    latency_ratio: candidate latency / baseline latency (None: not measured).
    baseline_nonfinite, candidate_nonfinite: predictions that were NaN or
      infinite; any makes the candidate NOT_BLESSED.
    examples: examples evaluated, for the reasons' wording.
    baseline_blessed: the blessing of an upstream validation of the baseline,
      if one was wired; False makes the candidate NOT_BLESSED.
    baseline_blessing_problem: why the wired ``baseline_blessing`` cannot be
      trusted (absent, or the blessing of another model); NOT_BLESSED.
    counted: examples that entered the metrics; fewer than ``min_examples``
      makes the candidate NOT_BLESSED (too little evidence).
    min_examples: the least number of counted examples to decide on.
    chance_accuracy: the accuracy of always predicting the most frequent
      class; a baseline no better than that makes the candidate NOT_BLESSED
      (matching a model that learned nothing proves nothing).

  Example:

      gate = GateThresholds(max_drop=0.01)
      decide(gate, {"accuracy": 0.95}, {"accuracy": 0.90}).blessed  # False
  """
  reasons = []
  if baseline_blessing_problem:
    reasons.append(baseline_blessing_problem)
  elif baseline_blessed is False:
    reasons.append(BASELINE_NOT_BLESSED)
  if counted is not None and counted < min_examples:
    reasons.append(
        f"only {counted} example(s) were evaluated, fewer than "
        f"`min_examples`={min_examples}: too few to tell the models apart "
        "(use a larger eval split)")
  base_accuracy = baseline_metrics.get("accuracy")
  if (chance_accuracy is not None and base_accuracy is not None
      and math.isfinite(base_accuracy) and base_accuracy <= chance_accuracy):
    reasons.append(
        f"the baseline itself is at chance level (accuracy "
        f"{base_accuracy:.4f}, no better than always predicting its most "
        f"frequent class: {chance_accuracy:.4f}), so matching it proves "
        "nothing")
  of = f" of {examples}" if examples else ""
  if candidate_nonfinite:
    reasons.append(f"{candidate_nonfinite}{of} candidate predictions were NaN "
                   "or infinite")
  if baseline_nonfinite:
    reasons.append(f"{baseline_nonfinite}{of} baseline predictions were NaN or "
                   "infinite, so the comparison is not meaningful")
  checks = tuple(gate.check(baseline_metrics, candidate_metrics,
                            compression_ratio, latency_ratio))
  blessed = not reasons and all(c.passed for c in checks)
  return Decision(blessed=blessed, checks=checks, reasons=tuple(reasons),
                  verdict=thresholds_lib.verdict_sentence(list(checks), reasons))


def saved_model_sizes(path: str) -> Tuple[int, int]:
  """(bytes on disk, gzip bytes) of a SavedModel directory."""
  return model_stats.dir_bytes(path), model_stats.gzip_file_bytes(path)


def tflite_sizes(content: bytes) -> Tuple[int, int]:
  return len(content), model_stats.gzip_bytes(content)


# ---------------------------------------------------------------------------
# Everything together.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
  decision: Decision
  report: report_types.EvaluationReport


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
  if a is None or b is None or not b:
    return None
  return float(a) / float(b)


def _check_inputs(baseline: KerasPredictor, candidate) -> None:
  extra = [n for n in candidate.input_names if n not in baseline.input_specs]
  if extra:
    raise EvaluationError(
        f"The candidate model's inputs {extra} are not inputs of the baseline "
        f"model (baseline inputs: {baseline.input_names}). Both models must "
        "take the same features: wire a candidate compressed from this "
        "baseline.")
  if (baseline.num_outputs and candidate.num_outputs
      and max(baseline.num_outputs, 2) != max(candidate.num_outputs, 2)):
    raise EvaluationError(
        f"The candidate model outputs {candidate.num_outputs} class score(s) "
        f"and the baseline {baseline.num_outputs}; they must predict the same "
        "classes.")


def _first_features(decoder, file_patterns, split, n) -> Dict[str, np.ndarray]:
  """The decoded features of the split's first ``n`` examples.

  Decoded eagerly, so an example that does not fit the schema fails here
  with a DataError naming the feature, before Beam starts.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = features_lib.list_files(file_patterns, split)
  ds = tf.data.TFRecordDataset(
      files, compression_type=features_lib.compression_type(files))
  serialized = next(iter(ds.take(n).batch(n)))
  features, _, _ = decoder.decode_with_presence(serialized)
  return {k: v.numpy() for k, v in features.items()}


def _check_top_k(config, num_classes: Optional[int]) -> None:
  """top_k_accuracy with k >= the number of classes passes any model."""
  if config.metric != "top_k_accuracy" or not num_classes:
    return
  classes = max(int(num_classes), 2)
  if config.top_k >= classes:
    raise EvaluationError(
        f"`top_k`={config.top_k} is not below the model's {classes} classes: "
        "every class is in the top k, so top_k_accuracy is 1.0 for any model. "
        f"Use top_k < {classes}, or metric='accuracy'.")


def _output_kinds(config, baseline, candidate, probe) -> Tuple[Dict[str, str], str]:
  """({role: 'probabilities' | 'logits'}, how it was decided).

  Said by ``output_kind``, else read off the baseline's loss and output layer
  (the candidate was compressed from it: its outputs mean the same), else
  decided per model on the first examples.
  """
  if config.output_kind != predictors.OUTPUT_KIND_AUTO:
    return ({role: config.output_kind for role in ROLES},
            "set by `output_kind`")
  kind = output_kind_from_model(baseline.model, baseline.num_outputs)
  if kind is not None:
    return ({role: kind for role in ROLES},
            "read from the baseline's loss and output layer")
  return ({"baseline": detect_output_kind(baseline.predict(probe)),
           "candidate": detect_output_kind(candidate.predict(probe))},
          "read from the outputs on the first examples")


def chance_accuracy(stats: MetricStats) -> Optional[float]:
  """The accuracy of always predicting the most frequent class of the labels."""
  if not stats.count:
    return None
  return float(stats.confusion.sum(axis=1).max() / stats.count)


def evaluate(*, pipeline, config, baseline_path: str, candidate_path: str,
             file_patterns: Sequence[str], schema=None,
             transform_dir: Optional[str] = None,
             candidate_io: Optional[Mapping[str, Any]] = None,
             candidate_sparsity: Optional[float] = None,
             baseline_blessed: Optional[bool] = None,
             baseline_blessing_problem: Optional[str] = None,
             pruning_search: Optional[Mapping[str, Any]] = None,
             plan: Optional[Mapping[str, Any]] = None,
             work_dir: str) -> EvaluationResult:
  """Measures the candidate against the baseline and decides.

  Args:
    pipeline: a beam.Pipeline for the metrics (run once, here).
    config: an EvaluatorConfig.
    baseline_path: the baseline's Keras SavedModel directory.
    candidate_path: the candidate's Keras SavedModel directory, or a directory
      holding model.tflite (or the .tflite file).
    file_patterns: the eval split's TFRecord file patterns.
    schema: the Schema proto (needed unless ``transform_dir`` is given).
    transform_dir: a TransformGraph directory: both models are fed the
      transformed features.
    candidate_io: the Quantizer's tflite_io.json, if any.
    candidate_sparsity: the candidate's sparsity as its producer recorded it;
      measured when None.
    baseline_blessed: an upstream blessing of the baseline, if wired.
    baseline_blessing_problem: why a wired baseline blessing cannot vouch
      for the baseline (absent, another model's), if it cannot.
    pruning_search: the Pruner's pruning_search.json, if any (for the report).
    plan: the CompressionPlanner's plan.json, if any (for the report).
    work_dir: a scratch directory.

  Returns:
    The Decision and the EvaluationReport.

  Raises:
    features.DataError: empty split, label not in the schema, inputs that are
      not features.
    EvaluationError: models that cannot be compared, labels that are not
      class ids.
    model_io.ModelLoadError: a model that cannot be loaded.
  """
  split = config.eval_split
  if schema is None and not transform_dir:
    raise EvaluationError("The evaluator needs `schema` (or `transform_graph`) "
                          "to decode the Examples; wire the SchemaGen's output.")
  sources = _model_sources(config, baseline_path, candidate_path, candidate_io)
  logging.info("Loading the baseline (%s) and the candidate (%s).",
               baseline_path, sources["candidate"].path)
  baseline = sources["baseline"].load()
  candidate = sources["candidate"].load()
  _check_inputs(baseline, candidate)

  decoder_spec = beam_stats.DecoderSpec.from_specs(
      schema, config.label_key, baseline.input_specs, transform_dir)
  decoder = decoder_spec.build()  # label / feature errors before Beam starts
  decoder.check_label()
  _check_top_k(config, baseline.num_outputs)
  try:
    features_lib.list_files(file_patterns, split)
  except features_lib.DataError as e:
    raise features_lib.DataError(
        f"{e} The CompressionEvaluator writes no blessing on zero examples.") from e

  # Whether each model outputs probabilities or logits is decided once, so
  # that every batch on every worker reads it alike.
  probe = _first_features(decoder, file_patterns, split,
                          min(config.batch_size, 256))
  output_kinds, kinds_source = _output_kinds(config, baseline, candidate, probe)
  logging.info("Model outputs read as: %s (%s)", output_kinds, kinds_source)
  started = time.time()
  # One pass that only counts records (no decoding), so the evaluation can
  # say how far along it is.
  total = features_lib.count_examples(file_patterns, split)
  stats = beam_stats.compute_stats(pipeline, file_patterns, decoder_spec,
                                   sources, config.batch_size, config.top_k,
                                   work_dir, output_kinds, total)
  logging.info("Metrics computed by Beam in %.1f s.", time.time() - started)
  base_stats, cand_stats = _checked_totals(config, stats)
  base_metrics = metrics_from_stats(base_stats)
  cand_metrics = metrics_from_stats(cand_stats)

  started = time.time()
  lat_features = (_first_features(decoder, file_patterns, split,
                                  config.latency_samples)
                  if config.latency_samples else None)
  sizes, latency, measured_sparsity = _sizes_and_latency(
      config, baseline, candidate, baseline_path, candidate_path, lat_features)
  logging.info("Sizes and latency measured in %.1f s.", time.time() - started)

  chance = chance_accuracy(base_stats)
  decision = decide(config.thresholds, base_metrics, cand_metrics,
                    sizes.compression_ratio, latency.latency_ratio,
                    baseline_nonfinite=base_stats.nonfinite,
                    candidate_nonfinite=cand_stats.nonfinite,
                    examples=base_stats.examples,
                    baseline_blessed=baseline_blessed,
                    baseline_blessing_problem=baseline_blessing_problem,
                    counted=base_stats.count,
                    min_examples=config.min_examples,
                    chance_accuracy=chance)
  examples = _examples_section(config, base_stats, cand_stats, base_metrics,
                               output_kinds, kinds_source, chance)
  sparsity = _sparsity_section(candidate_sparsity, measured_sparsity, baseline)
  models = {
      "baseline": {"kind": "keras", "path": baseline_path},
      "candidate": {"kind": sources["candidate"].kind,
                    "path": sources["candidate"].path,
                    "preprocessing": (candidate_io or {}).get("preprocessing")},
      "transform_graph": bool(transform_dir),
  }
  report = _report(config, decision, base_metrics, cand_metrics, examples,
                   sizes, latency, sparsity, models, baseline_blessed,
                   pruning_search, plan)
  return EvaluationResult(decision=decision, report=report)


def _sparsity_section(recorded: Optional[float], measured: Optional[float],
                      baseline: KerasPredictor) -> report_types.Sparsity:
  """The candidate's sparsity as its producer recorded it, else as measured."""
  return report_types.Sparsity(
      candidate=recorded if recorded is not None else measured,
      source=("recorded by the step that wrote the candidate"
              if recorded is not None else
              "measured: zeros in the candidate's kernel weights"),
      measured=measured,
      baseline=model_stats.sparsity_stats(baseline.model)["sparsity"])


def _model_sources(config, baseline_path: str, candidate_path: str,
                   candidate_io: Optional[Mapping[str, Any]]
                   ) -> Dict[str, ModelSource]:
  """{role: ModelSource}: a Keras baseline, a Keras or TFLite candidate."""
  if model_io.model_kind(baseline_path) == "tflite":
    raise EvaluationError(
        f"`baseline_model` at {baseline_path} is a TFLite model; the baseline "
        "must be the Keras SavedModel the candidate was compressed from (the "
        "Trainer's model).")
  baseline = ModelSource("baseline", "keras", baseline_path, config.module_file)
  if model_io.model_kind(candidate_path) == "tflite":
    candidate = ModelSource("candidate", "tflite",
                            model_io.find_tflite(candidate_path),
                            io=dict(candidate_io or {}))
  else:
    candidate = ModelSource("candidate", "keras", candidate_path,
                            config.module_file)
  return {"baseline": baseline, "candidate": candidate}


def _checked_totals(config, stats: Mapping[str, MetricStats]
                    ) -> Tuple[MetricStats, MetricStats]:
  """The baseline's and candidate's totals; raises on data the gate must not use."""
  split = config.eval_split
  if not stats or stats["baseline"].examples == 0:
    raise features_lib.DataError(
        f"The '{split}' split yielded no example; the CompressionEvaluator "
        "writes no blessing on zero examples.")
  base_stats, cand_stats = stats["baseline"], stats["candidate"]
  _check_top_k(config, base_stats.num_classes)
  if base_stats.missing_labels:
    raise features_lib.DataError(
        features_lib.missing_labels_message(
            base_stats.missing_labels, base_stats.examples, split,
            config.label_key) +
        " The CompressionEvaluator writes no blessing on made-up labels.")
  if base_stats.bad_labels or cand_stats.bad_labels:
    raise EvaluationError(
        f"{max(base_stats.bad_labels, cand_stats.bad_labels)} of "
        f"{base_stats.examples} examples have a `label_key`="
        f"{config.label_key!r} value that is not a class id in "
        f"[0, {base_stats.num_classes}) (the model's output classes). Check "
        "label_key, or map the labels to ids with Transform.")
  return base_stats, cand_stats


def _sizes_and_latency(config, baseline, candidate, baseline_path: str,
                       candidate_path: str,
                       lat_features: Optional[Mapping[str, np.ndarray]]
                       ) -> Tuple[report_types.Sizes, report_types.Latency,
                                  float]:
  """(sizes, latency, measured candidate sparsity), on one representation.

  A TFLite candidate is compared with the baseline converted to float TFLite;
  a Keras candidate with the baseline SavedModel.
  """
  base_sm_bytes, base_sm_gzip = saved_model_sizes(baseline_path)
  latency = {"baseline_seconds": None, "candidate_seconds": None,
             "samples": 0, "warmup": latency_lib.LATENCY_WARMUP, "threads": 1,
             "block": 1}
  samples = len(next(iter(lat_features.values()))) if lat_features else 0
  if isinstance(candidate, TFLitePredictor):
    base_content = keras_to_float_tflite(baseline.model)
    base_bytes, base_gzip = tflite_sizes(base_content)
    cand_bytes, cand_gzip = tflite_sizes(candidate.content)
    representation = ("TFLite: the baseline converted to float32 TFLite "
                      "(batch 1) against the candidate's .tflite")
    runtime = (f"TFLite interpreter ({tflite_runtime.runtime_name()}), "
               "invoke() per example")
    if lat_features:
      base_tfl = TFLitePredictor(model_content=base_content,
                                 role="baseline (float TFLite)")
      secs = latency_lib.tflite_latency(
          {"baseline": base_tfl, "candidate": candidate}, lat_features)
      latency.update(baseline_seconds=secs["baseline"],
                     candidate_seconds=secs["candidate"], samples=samples,
                     block=latency_lib.LATENCY_BLOCK)
    measured_sparsity = predictors.tflite_sparsity(candidate.content)
  else:
    base_bytes, base_gzip = base_sm_bytes, base_sm_gzip
    cand_bytes, cand_gzip = saved_model_sizes(candidate_path)
    representation = "SavedModel directories (all files) of both models"
    runtime = "TensorFlow, tf.function batch-1 call per example"
    if lat_features:
      secs, threads = latency_lib.keras_latency(
          {"baseline": baseline_path, "candidate": candidate_path},
          lat_features, config.module_file)
      latency.update(baseline_seconds=secs["baseline"],
                     candidate_seconds=secs["candidate"], threads=threads,
                     samples=samples)
    measured_sparsity = model_stats.sparsity_stats(candidate.model)["sparsity"]
  latency["runtime"] = runtime
  latency["latency_ratio"] = _ratio(latency["candidate_seconds"],
                                    latency["baseline_seconds"])
  sizes = {
      "representation": representation,
      "baseline_bytes": base_bytes, "candidate_bytes": cand_bytes,
      "baseline_gzip_bytes": base_gzip, "candidate_gzip_bytes": cand_gzip,
      "size_ratio": _ratio(base_bytes, cand_bytes),
      "gzip_size_ratio": _ratio(base_gzip, cand_gzip),
      "baseline_saved_model_bytes": base_sm_bytes,
      "baseline_saved_model_gzip_bytes": base_sm_gzip,
      "compression_measure": config.compression_measure,
  }
  sizes["compression_ratio"] = sizes[
      "size_ratio" if config.compression_measure == "raw" else "gzip_size_ratio"]
  return (report_types.Sizes(**sizes), report_types.Latency(**latency),
          measured_sparsity)


def _examples_section(config, base_stats: MetricStats, cand_stats: MetricStats,
                      base_metrics: Mapping[str, float],
                      output_kinds: Mapping[str, str], kinds_source: str,
                      chance: Optional[float]) -> report_types.Examples:
  """The report's account of the examples and of how outputs were read."""
  return report_types.Examples(
      split=config.eval_split, count=base_stats.examples,
      baseline_nonfinite=base_stats.nonfinite,
      candidate_nonfinite=cand_stats.nonfinite,
      baseline_logit_rows=base_stats.logit_rows,
      candidate_logit_rows=cand_stats.logit_rows,
      num_classes=base_stats.num_classes, top_k=config.top_k,
      baseline_outputs=output_kinds["baseline"],
      candidate_outputs=output_kinds["candidate"],
      outputs_read=kinds_source,
      label_key=config.label_key,
      counted=base_stats.count,
      min_examples=config.min_examples,
      chance_accuracy=chance,
      baseline_at_chance=bool(
          chance is not None and math.isfinite(base_metrics["accuracy"])
          and base_metrics["accuracy"] <= chance),
  )


def _report(config, decision: Decision, base_metrics, cand_metrics, examples,
            sizes, latency, sparsity, models, baseline_blessed,
            pruning_search, plan=None) -> report_types.EvaluationReport:
  """The EvaluationReport (report.json's content)."""
  gate = config.thresholds
  finite = all(math.isfinite(m[gate.metric])
               for m in (base_metrics, cand_metrics))
  return report_types.EvaluationReport(
      blessed=decision.blessed,
      verdict=decision.verdict,
      reasons=tuple(decision.reasons),
      thresholds=gate,
      checks=tuple(decision.checks),
      metric_drop=(gate.drop(base_metrics[gate.metric],
                             cand_metrics[gate.metric]) if finite else None),
      metrics={"baseline": dict(base_metrics),
               "candidate": dict(cand_metrics)},
      examples=examples,
      sizes=sizes,
      latency=latency,
      sparsity=sparsity,
      models=models,
      baseline_blessed=baseline_blessed,
      pruning_search=dict(pruning_search) if pruning_search else None,
      config=config.to_dict(),
      plan=dict(plan) if plan else None,
  )
