"""Iterative pruning: raise the sparsity step by step, keep the sparsest model that passes.

Each step continues from the previous step's weights (the run costs one fine-tuning
per step, not a growing sum), then the model is evaluated on the eval split with the
same metric and threshold rules as the CompressionEvaluator
(:class:`tfx_compression.components.common.thresholds.GateThresholds`) against the baseline's value on
the same split. The search stops at the first step that fails and returns the last
step that passed, the very model object that was evaluated. If even the first step
fails, it raises :class:`SearchError` with that step's figures and emits nothing.

Works for every structure: 'unstructured' (tfmot polynomial ramp from the previous
step's sparsity), 'M:N' (the sparsities map to blocks m:N, m = round(s * N)), and
'channels' (each step removes more channels, counted against the original widths).

Example:

    gate = GateThresholds(metric="accuracy", max_drop=0.005)
    result = search_sparsity(model, train_ds, eval_ds, config, gate, loss=loss)
    result.chosen.sparsity, [s.metric for s in result.steps]
"""

import dataclasses
import hashlib
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tfx_compression.components.common import metrics as metrics_lib
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import thresholds as thresholds_lib
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner.strategy import PruneResult

class SearchError(ValueError):
  """Even the first step of the search failed the gate: there is no model to emit."""


@dataclasses.dataclass
class SearchStep:
  """One step of the search: what was tried and how it measured."""
  index: int
  sparsity: float
  structure: str
  metric_name: str
  metric: float
  passed: bool
  checks: List[Dict[str, Any]]
  param_count: int
  nonzero_params: int
  gzip_bytes: int
  train_steps: int
  seconds: float
  weights_sha256: str
  metrics: Dict[str, float] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchResult:
  """The search's outcome: every step, the chosen one, and its model."""
  steps: List[SearchStep]
  chosen: SearchStep
  baseline_metric: float
  baseline_metrics: Dict[str, float]
  gate: thresholds_lib.GateThresholds
  prune_result: PruneResult

  @property
  def model(self):
    return self.prune_result.model

  def to_dict(self) -> Dict[str, Any]:
    """The curve as written to ``pruning_search.json``."""
    return {
        "metric_name": self.gate.metric,
        "baseline_metric": self.baseline_metric,
        "baseline_metrics": self.baseline_metrics,
        "thresholds": self.gate.to_dict(),
        "structure": self.chosen.structure,
        "chosen_sparsity": self.chosen.sparsity,
        "chosen_index": self.chosen.index,
        "steps_tried": len(self.steps),
        "steps": [s.to_dict() for s in self.steps],
    }

  def properties(self) -> Dict[str, Any]:
    """Custom properties for the output Model, on top of the chosen model's."""
    props = self.prune_result.properties()
    props.update(
        search_chosen_sparsity=self.chosen.sparsity,
        search_steps_tried=len(self.steps),
        search_metric=self.gate.metric,
        search_baseline_metric=self.baseline_metric,
        search_chosen_metric=self.chosen.metric,
        search_sparsities_tried=",".join(f"{s.sparsity:g}" for s in self.steps),
        search_metrics=",".join(f"{s.metric:.6f}" for s in self.steps),
    )
    return props


def model_metrics(model, dataset: tf.data.Dataset, top_k: int = 5
                  ) -> Tuple[Dict[str, float], int]:
  """Every gate metric of ``model`` over a finite dataset, as the evaluator computes it.

  Returns:
    (metric name -> value, number of non-finite predictions).
  """
  total = None
  for features, labels in dataset:
    outputs = model(features, training=False)
    if isinstance(outputs, dict):
      outputs = next(iter(outputs.values()))
    stats = metrics_lib.batch_stats(np.asarray(outputs), np.asarray(labels),
                                    top_k=top_k)
    total = stats if total is None else total.merge(stats)
  if total is None:
    raise SearchError("The eval split gave no example to evaluate the search "
                      "on; check `eval_split`.")
  return metrics_lib.metrics_from_stats(total), total.nonfinite


def weights_digest(model) -> str:
  """SHA-256 of every weight's bytes in order: equal digests, equal models."""
  h = hashlib.sha256()
  for w in model.get_weights():
    h.update(np.ascontiguousarray(w).tobytes())
  return h.hexdigest()


def stage_sparsities(config: config_lib.PrunerConfig) -> List[float]:
  """The sparsities to try, as the structure can reach them."""
  return strategy_lib.for_config(config).sparsities(config)


def search_sparsity(model, train_ds: tf.data.Dataset, eval_ds: tf.data.Dataset,
                    config: config_lib.PrunerConfig,
                    gate: thresholds_lib.GateThresholds, *, loss,
                    log_dir: Optional[str] = None,
                    stage_fn: Optional[Callable[..., Any]] = None) -> SearchResult:
  """Prunes step by step while the gate holds; returns the last passing step.

  Args:
    model: the trained tf_keras model; never modified.
    train_ds: (features, label) batches for fine-tuning (repeated as needed).
    eval_ds: finite (features, label) batches: the whole eval split.
    config: the Pruner's parameters (``search_sparsities``, ``search_steps``,
      structure, schedule, learning rate, seed, layer selection).
    gate: the thresholds each step must pass.
    loss: the model's own loss. With ``config.distills`` every step
      fine-tunes on the distillation loss towards the input model (one frozen
      teacher for the whole search); the chosen model keeps ``loss``.
    log_dir: TensorBoard directory; the curve is written under ``search/``.
    stage_fn: replaces one step's pruning (tests); called like :func:`_stage`.

  Returns:
    A :class:`SearchResult`; ``result.model`` is the chosen step's model.

  Raises:
    SearchError: the first step already fails the gate.
  """
  backend = strategy_lib.backend(model)
  backend.check_supported(model)
  stage_fn = stage_fn or _stage
  with backend.deterministic(config.seed):
    current = backend.clone_model(model)
    layers = backend.select_layers(current, config.include_layers,
                                   config.exclude_layers, config.m_by_n)
    baseline_metrics, _ = model_metrics(current, eval_ds)
    baseline_gzip = model_stats.weights_gzip_bytes(model_stats.model_weights(current))
  baseline = baseline_metrics[gate.metric]
  logging.info("Search: baseline %s = %.4f; trying sparsities %s with %s.",
               gate.metric, baseline, stage_sparsities(config), gate)
  writer = tf.summary.create_file_writer(f"{log_dir}/search") if log_dir else None
  train_loss, train_ds = strategy_lib.fine_tuning(model, loss, train_ds, config)

  steps: List[SearchStep] = []
  chosen: Optional[Tuple[SearchStep, PruneResult, List[Any]]] = None
  state: Dict[str, Any] = {"previous": config.initial_sparsity, "info": {}}
  for index, sparsity in enumerate(stage_sparsities(config)):
    start = time.perf_counter()
    stage_result = stage_fn(current, train_ds, config, sparsity, state,
                            loss=train_loss, layers=layers, index=index,
                            eval_ds=eval_ds)
    candidate = stage_result.model
    with backend.deterministic(config.seed):
      step = _score(index, sparsity, stage_result, eval_ds, config, gate,
                    baseline, start)
    passed = step.passed
    steps.append(step)
    logging.info("Search step %d: sparsity %.3f -> %s %.4f (baseline %.4f): %s.",
                 index, sparsity, gate.metric, step.metric, baseline,
                 "passed" if passed else "FAILED")
    if writer:
      _write_step(writer, step, gate.metric)
    if not passed:
      break
    # A stage may hand back a model that later stages go on training (the
    # unstructured search's shared view): keep this step's weights.
    chosen = (step, stage_result, candidate.get_weights())
    current = candidate
    state["previous"] = sparsity
  if writer:
    writer.close()

  if chosen is None:
    raise _first_step_error(steps[0], gate.metric, baseline)
  step, stage_result, weights = chosen
  if weights_digest(stage_result.model) != step.weights_sha256:
    model = backend.clone_model(stage_result.model)
    model.set_weights(weights)
    stage_result.model = model
  if config.distills:
    stage_result.model.compile(loss=loss)  # Saved with its own loss.
  logging.info("Search chose sparsity %.3f (%s %.4f) after %d step(s).",
               step.sparsity, gate.metric, step.metric, len(steps))
  stage_result.metrics = dict(step.metrics)
  stage_result.stats["baseline_gzip_weight_bytes"] = baseline_gzip
  stage_result.baseline_metrics = {k: float(v) for k, v in baseline_metrics.items()}
  return SearchResult(steps=steps, chosen=step, baseline_metric=float(baseline),
                      baseline_metrics=stage_result.baseline_metrics, gate=gate,
                      prune_result=stage_result)


def _score(index: int, sparsity: float, stage_result: PruneResult, eval_ds,
           config: config_lib.PrunerConfig,
           gate: thresholds_lib.GateThresholds, baseline: float,
           start: float) -> SearchStep:
  """Scores one step's model on the eval split against the gate."""
  candidate = stage_result.model
  metrics, nonfinite = model_metrics(candidate, eval_ds)
  checks = gate.check_quality(baseline, metrics[gate.metric])
  passed = nonfinite == 0 and all(c.passed for c in checks)
  whole = model_stats.sparsity_stats(candidate)
  return SearchStep(
      index=index, sparsity=float(sparsity), structure=config.sparsity_structure,
      metric_name=gate.metric, metric=float(metrics[gate.metric]),
      passed=passed, checks=[c.to_dict() for c in checks],
      param_count=whole["param_count"],
      nonzero_params=whole["param_count"] - whole["zero_count"],
      # The stage measured it (gzip -9 of ~1 MB takes ~0.5 s: not twice).
      gzip_bytes=int(stage_result.stats.get("gzip_weight_bytes")
                     or model_stats.weights_gzip_bytes(model_stats.model_weights(candidate))),
      train_steps=config.stage_steps(),
      seconds=time.perf_counter() - start,
      weights_sha256=weights_digest(candidate),
      metrics={k: float(v) for k, v in metrics.items()})


def _write_step(writer, step: SearchStep, metric: str) -> None:
  """The step's point of the curve, as TensorBoard scalars under search/."""
  with writer.as_default():
    tf.summary.scalar("search/sparsity", step.sparsity, step=step.index)
    tf.summary.scalar(f"search/{metric}", step.metric, step=step.index)
    tf.summary.scalar("search/nonzero_params", step.nonzero_params,
                      step=step.index)
    tf.summary.scalar("search/gzip_bytes", step.gzip_bytes, step=step.index)
    tf.summary.scalar("search/passed", int(step.passed), step=step.index)
  writer.flush()


def _first_step_error(first: SearchStep, metric: str,
                      baseline: float) -> SearchError:
  reasons = [c["description"] + f" is {c['value']:.4g}, limit "
             f"{c['comparison']} {c['limit']:g}" for c in first.checks
             if not c["passed"]] or ["non-finite predictions"]
  return SearchError(
      f"The pruning search's first step already fails the gate: at sparsity "
      f"{first.sparsity:g} the {metric} is {first.metric:.4f} against the "
      f"baseline's {baseline:.4f} ({'; '.join(reasons)}). No model was "
      "emitted. Start `search_sparsities` lower (e.g. 0.3), give each step "
      "more fine-tuning (`search_steps`), or loosen the thresholds.")


def _stage(current, train_ds, config: config_lib.PrunerConfig, sparsity: float,
           state: Dict[str, Any], *, loss, layers: Sequence[str], index: int,
           eval_ds=None) -> PruneResult:
  """One step: prune ``current`` (the previous step's model) on to ``sparsity``."""
  del eval_ds  # Each step is scored by the search, with the gate's metric.
  return strategy_lib.for_config(config).stage(
      current, train_ds, config, sparsity, state, loss=loss, layers=layers,
      index=index)
