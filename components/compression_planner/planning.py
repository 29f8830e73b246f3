"""Search a compression plan: pruning structures × sparsities × quantization modes.

TFX-free: a Keras model, ``tf.data`` datasets and a :class:`PlannerConfig` in, a
:class:`PlanResult` out (every candidate measured, the chosen one's file on
disk). It composes the Pruner's strategies (one climb per structure, each step
continuing from the previous one's weights, stopping at the first step whose
Keras model fails the gate) and the Quantizer's ``quantize`` (each passing
step's model converted once per mode). Cost: one fine-tuning per step tried,
one conversion per passing step and mode, never their product.

Every candidate is measured through the runtime it ships in (the TFLite
interpreter, one thread, for converted models; TensorFlow for a SavedModel) on
the whole eval split with the CompressionEvaluator's metric code and
``GateThresholds``, against the input model's value on the same split; plus
raw and gzip bytes and the median single-thread latency. The chosen candidate
is the best passing one by ``objective``, ties going to the better metric.

A bound skips hopeless work: TFLite stores unstructured and M:N sparse weights
densely (``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` shrank only float32 models
here, see the README) and runs them through dense kernels, so such a climb can
at best match the raw bytes (``objective='size'``) or, up to timing noise, the
latency (``'latency'``) of its starting model's conversions; when a passing
candidate is already that small (or that much faster), the structure is
skipped and recorded so.

Example:

    config = PlannerConfig(label_key="label", max_drop=0.005)
    plan = search_plan(model, train_ds, eval_ds, config, loss=loss,
                       work_dir="/tmp/plan")
    plan.chosen.structure, plan.chosen.mode, plan.chosen.raw_bytes
"""

import copy
import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from absl import logging
import numpy as np

from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.common import tflite_convert
from tfx_compression.components.common import tflite_packing
from tfx_compression.components.compression_evaluator import latency as latency_lib
from tfx_compression.components.compression_evaluator import predictors
from tfx_compression.components.compression_planner import config as config_lib
# The plan's data types and the choice rule, where callers find them.
from tfx_compression.components.compression_planner.plan_result import (  # noqa: F401  pylint: disable=g-multiple-import,unused-import
    OBJECTIVE_FIELDS, Candidate, PlanResult, Step, choose, digest)
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.quantizer import quantization

LATENCY_WARMUP = 5
# Objective 'latency': an unstructured or M:N climb is skipped when a passing
# candidate already takes at most this share of its starting model's latency.
# Zeros in dense kernels bought nothing measurable (the demo CNN at 80%
# unstructured sparsity: 0.997x the dense model's latency, float TFLite,
# benchmarks/results/benchmark.json); the margin is for timing noise.
LATENCY_BOUND = 0.8


class PlanError(ValueError):
  """No candidate passed the gate: there is no model to emit."""


def metrics_of(predict: Callable[[Dict[str, np.ndarray]], Any], eval_ds,
               output_kind: Optional[str]) -> Tuple[Dict[str, float], int]:
  """Every gate metric over the eval split, read as the evaluator reads it.

  Returns:
    (metric name -> value, non-finite predictions).
  """
  total = None
  for features, labels in eval_ds:
    feats = {k: np.asarray(v) for k, v in features.items()}
    stats = metrics_lib.batch_stats(np.asarray(predict(feats)),
                                    np.asarray(labels), output_kind=output_kind)
    total = stats if total is None else total.merge(stats)
  if total is None:
    raise PlanError("The eval split gave no example to measure the "
                    "candidates on; check `eval_split`.")
  return metrics_lib.metrics_from_stats(total), total.nonfinite


def _keras_predict(model):
  def predict(features):
    out = model(features, training=False)
    if isinstance(out, dict):
      out = next(iter(out.values()))
    return np.asarray(out)
  return predict


def _why_not(checks, nonfinite: int) -> Optional[str]:
  reasons = [c.sentence() for c in checks if not c.passed]
  if nonfinite:
    reasons.append(f"{nonfinite} predictions were NaN or infinite")
  return "; ".join(reasons) or None


def _latency_rows(eval_ds, n: int) -> Optional[Dict[str, np.ndarray]]:
  """The eval split's first ``n`` examples' features (the evaluator times the
  first examples too)."""
  if n <= 0:
    return None
  parts: Dict[str, List[np.ndarray]] = {}
  count = 0
  for features, _ in eval_ds:
    for k, v in features.items():
      parts.setdefault(k, []).append(np.asarray(v))
    count += len(next(iter(features.values())))
    if count >= n:
      break
  return {k: np.concatenate(v)[:n] for k, v in parts.items()}


class _Planner:
  """The state of one search: what was measured so far and where it goes."""

  def __init__(self, model, train_ds, eval_ds, config, loss, work_dir,
               representative, export_fn, stage_fn):
    self.config = config
    self.gate = config.gate()
    self.train_ds, self.eval_ds, self.loss = train_ds, eval_ds, loss
    self.work_dir = work_dir
    self.export_fn, self.stage_fn = export_fn, stage_fn or _stage
    self.backend = strategy_lib.backend(model)
    self.backend.check_supported(model)
    self.candidates: List[Candidate] = []
    self.steps: List[Step] = []
    self.skipped: List[Dict[str, str]] = []
    self.ios: Dict[int, Dict[str, Any]] = {}
    self.keras_latency_dirs: Dict[int, str] = {}
    try:
      self.kind = predictors.output_kind_from_model(
          model, model.outputs[0].shape[-1])
    except predictors.EvaluationError:
      self.kind = None
    with self.backend.deterministic(config.seed):
      self.model = self.backend.clone_model(model)
      base_metrics, _ = metrics_of(_keras_predict(self.model), eval_ds,
                                   self.kind)
    self.base_metrics = base_metrics
    self.base_value = float(base_metrics[self.gate.metric])
    self.lat_rows = _latency_rows(eval_ds, config.latency_samples)
    # What every step trains on: with distillation, one frozen teacher (the
    # input model) for the whole plan, as the Pruner's search has.
    self.distills = config.distillation_weight > 0
    self.train_loss, self.fit_ds = strategy_lib.fine_tuning(
        model, loss, train_ds, config.pruner_config(config_lib.UNSTRUCTURED))
    self.representative = representative
    if representative is None and "int8" in config.tflite_modes:
      batches = -(-config.num_representative_samples // config.batch_size)
      self.representative = list(train_ds.take(batches))
    self.pack = bool(config.pack_inputs) and _packs(self.model)

  # Measuring.

  def baseline(self) -> Dict[str, Any]:
    """The input model's figures: its metric, and its float TFLite size and
    latency (the reference the evaluator compares a TFLite candidate with)."""
    figures = {"metric": self.base_value,
               "metrics": {k: float(v) for k, v in self.base_metrics.items()}}
    try:
      content = tflite_convert.convert(self.model, "float")
    except tflite_convert.ConversionError as e:
      logging.warning("No float TFLite reference: %s", e)
      return figures
    figures.update(float_tflite_bytes=len(content),
                   float_tflite_gzip_bytes=model_stats.gzip_bytes(content))
    if self.lat_rows:
      pred = predictors.TFLitePredictor(model_content=content,
                                        role="baseline (float TFLite)")
      figures["float_tflite_latency_us"] = self._latency(pred)
    return figures

  def _latency(self, pred) -> float:
    secs = latency_lib.tflite_latency({"model": pred}, self.lat_rows,
                                      warmup=LATENCY_WARMUP)
    return 1e6 * secs["model"]

  def _judge(self, metrics: Mapping[str, float], nonfinite: int):
    value = float(metrics[self.gate.metric])
    checks = self.gate.check_quality(self.base_value, value)
    passed = nonfinite == 0 and all(c.passed for c in checks)
    return value, passed, (None if passed else _why_not(checks, nonfinite))

  def convert(self, model, structure: str, sparsity: float,
              weight_sparsity: Optional[float]) -> List[Candidate]:
    """``model`` in every TFLite mode, each measured; one conversion each."""
    out = []
    for mode in self.config.tflite_modes:
      index = len(self.candidates)
      qconfig = dataclasses.replace(self.config.quantizer_config(mode),
                                    pack_inputs=int(self.pack))
      base = dict(index=index, structure=structure, sparsity=sparsity,
                  mode=mode, kind="tflite", packed=self.pack,
                  weight_sparsity=weight_sparsity)
      try:
        result = quantization.quantize(
            model, qconfig, representative_data=self.representative,
            measure_float=False)
      except (tflite_convert.ConversionError,
              tflite_packing.PackingError) as e:
        candidate = Candidate(metric=None, passed=False,
                              why_not=f"conversion failed: {e}",
                              raw_bytes=None, gzip_bytes=None,
                              latency_us=None, sha256=None, file=None, **base)
        self._add(candidate)
        out.append(candidate)
        continue
      path = os.path.join(self.work_dir, f"candidate-{index:03d}.tflite")
      with open(path, "wb") as f:
        f.write(result.tflite_model)
      pred = predictors.TFLitePredictor(model_content=result.tflite_model,
                                        io=result.io, role=f"candidate {index}")
      metrics, nonfinite = metrics_of(pred.predict, self.eval_ds, self.kind)
      value, passed, why = self._judge(metrics, nonfinite)
      candidate = Candidate(
          metric=value, passed=passed, why_not=why,
          raw_bytes=len(result.tflite_model),
          gzip_bytes=model_stats.gzip_bytes(result.tflite_model),
          latency_us=self._latency(pred) if self.lat_rows else None,
          sha256=digest(path), file=path,
          metrics={k: float(v) for k, v in metrics.items()}, **base)
      self.ios[index] = result.io
      self._add(candidate)
      out.append(candidate)
    return out

  def keep_saved_model(self, result, structure: str, sparsity: float,
                       step: Step, metrics: Mapping[str, float]) -> None:
    """The pruned model itself (mode 'none'), exported now: a later step may
    train the same weights on."""
    if self.export_fn is None:
      raise ValueError("quantization mode 'none' emits the pruned SavedModel, "
                       "so search_plan needs `export_fn`.")
    index = len(self.candidates)
    path = os.path.join(self.work_dir, f"candidate-{index:03d}")
    if self.distills:
      # Saved with its own loss, not the distillation closure; a copy, since
      # the next step trains on this compiled model.
      with self.backend.deterministic(self.config.seed):
        own = self.backend.clone_model(result.model)
      own.compile(loss=self.loss)
      result = copy.copy(result)
      result.model = own
    self.export_fn(result, path)
    self.keras_latency_dirs[index] = path
    self._add(Candidate(
        index=index, structure=structure, sparsity=sparsity,
        mode=config_lib.NO_QUANTIZATION, kind="saved_model", packed=False,
        metric=step.metric, passed=step.passed, why_not=step.why_not,
        raw_bytes=model_stats.dir_bytes(path),
        gzip_bytes=model_stats.gzip_file_bytes(path), latency_us=None,
        sha256=digest(path), weight_sparsity=result.stats.get("sparsity"),
        file=path, metrics=dict(metrics)))

  def _add(self, candidate: Candidate) -> None:
    self.candidates.append(candidate)
    logging.info("Plan candidate %d: %s %.2f %s -> %s %s, %s bytes (%s gzip), "
                 "%s us: %s.", candidate.index, candidate.structure,
                 candidate.sparsity, candidate.mode, self.gate.metric,
                 candidate.metric, candidate.raw_bytes, candidate.gzip_bytes,
                 candidate.latency_us,
                 "passed" if candidate.passed else candidate.why_not)

  def measure_saved_model_latency(self) -> None:
    """Every SavedModel candidate timed in one fresh single-thread process."""
    if not self.keras_latency_dirs or not self.lat_rows:
      return
    secs, _ = latency_lib.keras_latency(
        {str(i): p for i, p in self.keras_latency_dirs.items()},
        self.lat_rows, self.config.module_file, warmup=LATENCY_WARMUP)
    for i, s in secs.items():
      self.candidates[int(i)] = dataclasses.replace(
          self.candidates[int(i)], latency_us=1e6 * s)

  # Climbing.

  def climb(self, structure: str, start, label: str):
    """Climbs one structure from ``start``; returns the last passing step's
    model (None if the first step failed). Each passing step is converted in
    every mode before the next step trains on."""
    pconfig = self.config.pruner_config(structure)
    strategy = strategy_lib.for_config(pconfig)
    with self.backend.deterministic(self.config.seed):
      current = self.backend.clone_model(start)
      layers = self.backend.select_layers(
          current, pconfig.include_layers, pconfig.exclude_layers,
          pconfig.m_by_n)
    state: Dict[str, Any] = {"previous": 0.0, "info": {}}
    last = None
    for index, sparsity in enumerate(strategy.sparsities(pconfig)):
      began = time.perf_counter()
      result = self.stage_fn(strategy, current, self.fit_ds, pconfig,
                             sparsity, state, loss=self.train_loss,
                             layers=layers, index=index)
      with self.backend.deterministic(self.config.seed):
        metrics, nonfinite = metrics_of(_keras_predict(result.model),
                                        self.eval_ds, self.kind)
      value, passed, why = self._judge(metrics, nonfinite)
      whole = model_stats.sparsity_stats(result.model)
      step = Step(structure=label, sparsity=float(sparsity), metric=value,
                  passed=passed, why_not=why,
                  param_count=whole["param_count"],
                  nonzero_params=whole["param_count"] - whole["zero_count"],
                  train_steps=pconfig.stage_steps(),
                  seconds=time.perf_counter() - began)
      self.steps.append(step)
      logging.info("Plan step %s %.3f: %s %.4f (baseline %.4f): %s.", label,
                   sparsity, self.gate.metric, value, self.base_value,
                   "passed" if passed else why)
      if not passed:
        break
      sparsity_now = result.stats.get("sparsity")
      converted = self.convert(result.model, label, float(sparsity),
                               sparsity_now)
      if config_lib.NO_QUANTIZATION in self.config.quantization_modes:
        why_skip = self.saved_model_dominated(converted)
        if why_skip:
          self.skipped.append({"structure": f"{label} {sparsity:g} none",
                               "why": why_skip})
          logging.info("Plan: skipping %s %g none: %s.", label, sparsity,
                       why_skip)
        else:
          if structure == config_lib.CHANNELS_THEN_UNSTRUCTURED:
            result.structure = config_lib.CHANNELS  # a narrow model's export
          self.keep_saved_model(result, label, float(sparsity), step, metrics)
      last = result
      current = result.model
      state["previous"] = sparsity
    return last

  def saved_model_dominated(self, converted: List[Candidate]
                            ) -> Optional[str]:
    """Why this step's SavedModel (mode 'none') cannot win, or None.

    With a size objective, a passing TFLite conversion of the same model is
    smaller than its SavedModel (which stores every weight as float32 beside
    the graph) at the same pruning, so exporting and timing it is wasted."""
    if self.config.objective == "latency":
      return None
    passing = [c for c in converted if c.passed]
    if not passing:
      return None
    best = min(passing, key=lambda c: c.objective_value(self.config.objective))
    return (f"objective {self.config.objective!r}: the same model's {best.mode} "
            f"TFLite conversion passed with "
            f"{best.objective_value(self.config.objective):,} bytes, and a "
            "SavedModel of it is larger (float32 weights plus the graph)")

  def dense_bound_skip(self, structure: str, start_indices: List[int]
                       ) -> Optional[str]:
    """Why ``structure`` cannot beat the best passing candidate, or None.

    TFLite stores unstructured and M:N sparse weights densely and runs them
    through dense kernels, so such a climb can at best match its starting
    model's conversions: in raw bytes exactly (objective 'size'), in latency
    up to timing noise (objective 'latency': skipped only when a passing
    candidate already takes at most LATENCY_BOUND of that time). Channels
    pruning makes the model smaller and is never bounded."""
    objective = self.config.objective
    if (objective not in ("size", "latency")
        or structure == config_lib.CHANNELS or not self.config.tflite_modes):
      return None
    values = [self.candidates[i].objective_value(objective)
              for i in start_indices]
    values = [v for v in values if v]
    best = choose(self.candidates, objective, True)
    if not values or best is None:
      return None
    floor = min(values)
    named = (f"candidate {best.index} ({best.structure} {best.sparsity:g} "
             f"{best.mode})")
    if objective == "size":
      if best.raw_bytes > floor:
        return None
      return (f"objective 'size': {structure} keeps every weight's storage in "
              f"TFLite (dense), so it cannot go below {floor:,} raw bytes "
              f"(its starting model converted), and {named} already has "
              f"{best.raw_bytes:,}")
    if best.latency_us > LATENCY_BOUND * floor:
      return None
    return (f"objective 'latency': TFLite runs {structure} sparse weights "
            f"through dense kernels, so it cannot be faster than its starting "
            f"model converted ({floor:.1f} us) beyond timing noise, and {named} "
            f"already takes {best.latency_us:.1f} us "
            f"({best.latency_us / floor:.2f}x of it)")


def _packs(model) -> bool:
  """Whether the model's inputs can be packed into one tensor."""
  try:
    tflite_packing.pack_inputs(model)
  except tflite_packing.PackingError as e:
    logging.info("pack_inputs does not apply: %s", e)
    return False
  return True


def _stage(strategy, current, train_ds, config, sparsity, state, *, loss,
           layers, index):
  """One pruning step (replaced in tests to count or fake the fine-tuning)."""
  return strategy.stage(current, train_ds, config, sparsity, state, loss=loss,
                        layers=layers, index=index)


def search_plan(model, train_ds, eval_ds, config: config_lib.PlannerConfig, *,
                loss, work_dir: str, representative=None,
                export_fn: Optional[Callable[[Any, str], None]] = None,
                stage_fn: Optional[Callable[..., Any]] = None) -> PlanResult:
  """Climbs every structure, converts every passing step, picks the best.

  Args:
    model: the trained Keras model (tf_keras or Keras 3); never modified.
    train_ds: (features, label) batches for fine-tuning (repeated).
    eval_ds: finite (features, label) batches: the whole eval split.
    config: the planner's parameters.
    loss: the fine-tuning loss.
    work_dir: a local directory; every candidate's file is written there.
    representative: batches (or feature dicts) calibrating 'int8'; default:
      the first ``num_representative_samples`` examples of ``train_ds``.
    export_fn: ``(prune_result, directory)`` writes a pruned SavedModel
      (needed for mode 'none').
    stage_fn: replaces one pruning step (tests); called like ``_stage``.

  Returns:
    The :class:`PlanResult`; ``result.chosen.file`` is the chosen model,
    byte for byte as measured.

  Raises:
    PlanError: no candidate passed the gate (naming the best one's figures).
  """
  os.makedirs(work_dir, exist_ok=True)
  planner = _Planner(model, train_ds, eval_ds, config, loss, work_dir,
                     representative, export_fn, stage_fn)
  baseline = planner.baseline()
  logging.info("Plan: baseline %s = %.4f; structures %s, sparsities %s, "
               "modes %s, objective %s.", planner.gate.metric,
               planner.base_value, config.structures, config.sparsities,
               config.quantization_modes, config.objective)
  # Quantization alone first: cheap, and the bound for dense structures.
  unpruned = planner.convert(planner.model, config_lib.NO_PRUNING, 0.0, 0.0)
  unpruned_indices = [c.index for c in unpruned]
  channels_last = None
  channels_indices: List[int] = []
  for structure in config.structures:
    if structure == config_lib.CHANNELS_THEN_UNSTRUCTURED:
      if config_lib.CHANNELS not in config.structures:
        first = len(planner.candidates)
        channels_last = planner.climb(config_lib.CHANNELS, planner.model,
                                      config_lib.CHANNELS)
        channels_indices = _last_tflite(planner, first, config_lib.CHANNELS)
      if channels_last is None:
        planner.skipped.append({"structure": structure, "why": (
            "channels pruning had no passing step to continue from")})
        continue
      why = planner.dense_bound_skip(structure, channels_indices)
      start = channels_last.model
    else:
      why = (planner.dense_bound_skip(structure, unpruned_indices)
             if structure != config_lib.CHANNELS else None)
      start = planner.model
    if why:
      logging.info("Plan: skipping %s: %s.", structure, why)
      planner.skipped.append({"structure": structure, "why": why})
      continue
    first = len(planner.candidates)
    last = planner.climb(structure, start, structure)
    if structure == config_lib.CHANNELS:
      channels_last = last
      channels_indices = _last_tflite(planner, first, structure)
  planner.measure_saved_model_latency()

  gate = planner.gate
  best = choose(planner.candidates, config.objective, _higher(gate.metric))
  if best is None:
    raise _no_candidate_error(planner, config.objective)
  result = PlanResult(candidates=tuple(planner.candidates),
                      steps=tuple(planner.steps),
                      skipped=tuple(planner.skipped), baseline=baseline,
                      gate=gate, objective=config.objective,
                      chosen_index=best.index, ios=dict(planner.ios))
  logging.info("Plan chose candidate %d: %s %.2f %s, %s %.4f, %s raw bytes, "
               "%s gzip bytes, %s us (%d candidates, %d steps).", best.index,
               best.structure, best.sparsity, best.mode, gate.metric,
               best.metric, best.raw_bytes, best.gzip_bytes, best.latency_us,
               len(result.candidates), len(result.steps))
  return result


def _higher(metric: str) -> bool:
  return thresholds_lib.higher_is_better(metric)


def _last_tflite(planner: _Planner, first: int, structure: str) -> List[int]:
  """The TFLite candidates of the climb's last passing step."""
  mine = [c for c in planner.candidates[first:]
          if c.structure == structure and c.kind == "tflite"]
  if not mine:
    return []
  top = max(c.sparsity for c in mine)
  return [c.index for c in mine if c.sparsity == top]


def _no_candidate_error(planner: _Planner, objective: str) -> PlanError:
  metric = planner.gate.metric
  higher = _higher(metric)
  measured = [c for c in planner.candidates if c.metric is not None]
  if measured:
    best = (max if higher else min)(measured, key=lambda c: c.metric)
    figures = (f"the best candidate, {best.structure} {best.sparsity:g} "
               f"{best.mode}, has {metric} {best.metric:.4f} against the "
               f"baseline's {planner.base_value:.4f}, {best.raw_bytes} raw "
               f"bytes ({best.why_not})")
  elif planner.steps:
    step = (max if higher else min)(planner.steps, key=lambda s: s.metric)
    figures = (f"no step passed; the best, {step.structure} "
               f"{step.sparsity:g}, has {metric} {step.metric:.4f} against "
               f"the baseline's {planner.base_value:.4f} ({step.why_not})")
  else:
    figures = "nothing could be measured"
  return PlanError(
      f"No compression plan passes the gate ({planner.gate.to_dict()}): "
      f"{figures}. {len(planner.candidates)} candidate(s) and "
      f"{len(planner.steps)} step(s) were tried; no model was emitted. Start "
      "`sparsities` lower, give each step more `search_steps`, add "
      "quantization modes such as 'float16', or loosen the thresholds.")
