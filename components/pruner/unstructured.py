"""Unstructured pruning: single weights, by magnitude, on tfmot's schedule.

The strategy for ``sparsity_structure='unstructured'``. The work is done by the
model's Keras backend (``keras2_magnitude`` with tfmot, or ``keras3_magnitude``);
this module says what to ask of it, measures the result and exports it.

Example:

    strategy = UnstructuredStrategy()
    result = strategy.prune(plain, train_ds, config,
                            Run(loss=loss, layers=["d1", "d2"], steps=300))
    result.stats["sparsity"]  # ~config.target_sparsity
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging

from tfx_compression.components.common import model_io
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner.strategy import PruneResult
from tfx_compression.components.pruner.strategy import PruningError
from tfx_compression.components.pruner.strategy import Run


class UnstructuredStrategy:
  """Zeroes the smallest weights of the selected kernels (tfmot's PolynomialDecay
  or ConstantSparsity schedule)."""

  def _schedule(self, config, steps: int
               ) -> Tuple[int, Optional[int], Optional[int]]:
    return config.schedule_steps(steps)

  def prune(self, plain, train_ds, config, run: Run) -> PruneResult:
    begin, end, freq = self._schedule(config, run.steps)
    pruned = strategy_lib.backend(plain).prune_to(
        plain, train_ds, target_sparsity=config.target_sparsity,
        steps=run.steps, loss=run.loss, layers=run.layers,
        initial_sparsity=config.initial_sparsity, schedule=config.schedule,
        begin_step=begin, end_step=end, frequency=freq, m_by_n=config.m_by_n,
        learning_rate=config.learning_rate, seed=config.seed,
        log_dir=run.log_dir,
        steps_per_epoch=config.steps_per_epoch(run.train_examples),
        copy=False)  # ``plain`` is prune_model's own clone.
    stats = self.stats(pruned, run.layers, {})
    self.check(pruned, run.layers, stats, config)
    return PruneResult(
        model=pruned, structure=config.sparsity_structure,
        pruned_layers=list(run.layers), stats=stats, metrics={},
        baseline_metrics={}, info={},
        target_sparsity=config.effective_target_sparsity)

  def check(self, pruned, layers: Sequence[str], stats: Dict[str, Any],
            config) -> None:
    """Warns when small layers kept the sparsity away from the target."""
    del pruned, layers  # Read through stats.
    gap = abs(stats["sparsity"] - config.target_sparsity)
    if gap > 0.01:
      logging.warning("Achieved sparsity %.4f is %.4f from target_sparsity "
                      "%.4f (small layers round to whole weights).",
                      stats["sparsity"], gap, config.target_sparsity)

  def stage(self, current, train_ds, config, sparsity: float,
            state: Dict[str, Any], *, loss, layers: Sequence[str],
            index: int) -> PruneResult:
    # One wrapped, compiled model for the whole search: each step only moves
    # the schedule's target and trains on (see ContinuedPruning).
    run = state.get("continued")
    if run is None:
      run = strategy_lib.backend(current).ContinuedPruning(
          current, layers, loss=loss, schedule=config.schedule,
          learning_rate=config.learning_rate, seed=config.seed)
      state["continued"] = run
    pruned = run.stage(train_ds, state["previous"], sparsity,
                       config.stage_steps(), seed=config.seed + index)
    return self._stage_result(pruned, config.sparsity_structure, layers,
                              sparsity)

  def _stage_result(self, pruned, structure: str, layers: Sequence[str],
                    sparsity: float) -> PruneResult:
    return PruneResult(
        model=pruned, structure=structure, pruned_layers=list(layers),
        stats=self.stats(pruned, layers, {}), metrics={}, baseline_metrics={},
        info={}, target_sparsity=sparsity)

  def sparsities(self, config) -> List[float]:
    return list(config.search_sparsities)

  def stats(self, model, pruned_layers: Sequence[str],
            info: Dict[str, Any]) -> Dict[str, Any]:
    """sparsity (zeros / size over the pruned layers' kernels),
    pruned_param_count, pruned_zero_count, param_count and zero_count (every
    weight), gzip_weight_bytes (gzip of all weights)."""
    del info  # Nothing structure-specific.
    return strategy_lib.backend(model).pruning_stats(model, pruned_layers)

  def export(self, result: PruneResult, original, path: str,
             sample_serialized_examples: Optional[Sequence[bytes]] = None,
             label_key: Optional[str] = None) -> None:
    """Saves the pruned weights at ``path`` with the input's serving signatures.

    The input's signatures (e.g. serving_default taking serialized tf.Examples)
    are concrete functions reading ``original``'s variables, so the pruned
    weights are written into ``original``, which is saved with its signatures
    and then given its own weights back. The SavedModel has plain Keras layers
    only: it loads without tfmot.
    """
    del sample_serialized_examples, label_key  # The signatures are kept as is.
    saved = original.get_weights()
    try:
      _copy_weights(result.model, original)
      signatures = model_io.serving_signatures(original) or None
      original.save(path, save_format="tf", signatures=signatures,
                    include_optimizer=False)
    finally:
      original.set_weights(saved)


def _copy_weights(source, target) -> None:
  """Sets ``target``'s weights from ``source``'s layer of the same name."""
  by_name = {l.name: l for l in source.layers}
  for layer in target.layers:
    if not layer.weights:
      continue
    if layer.name not in by_name:
      raise PruningError(f"Layer {layer.name!r} of the input model is missing "
                         "from the pruned model.")
    layer.set_weights(by_name[layer.name].get_weights())
