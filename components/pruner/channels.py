"""Channel pruning: whole filters and neurons removed, the model physically narrower.

The strategy for ``sparsity_structure='channels'``. The model's Keras backend does
the work (``keras2_channels`` for tf_keras; ``keras3_channels`` when there is
one); this module maps the config onto it, measures the result and exports it.
``target_sparsity`` is the share of the selected layers' channels removed.

Example:

    strategy = ChannelsStrategy()
    result = strategy.prune(plain, train_ds, config,
                            Run(loss=loss, layers=layers, steps=300))
    result.info["channels_kept"]  # {'conv1': 16, 'conv2': 32, 'dense1': 128}
"""

from typing import Any, Callable, Dict, List, Optional, Sequence

from tfx_compression.components.common import model_stats
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner.strategy import PruneResult
from tfx_compression.components.pruner.strategy import Run


def layer_filter(include: Sequence[str], exclude: Sequence[str]
                ) -> Optional[Callable[[Any], bool]]:
  """callable(layer) -> bool from include/exclude patterns (None: all)."""
  if not include and not exclude:
    return None
  match = strategy_lib.matches
  return lambda layer: ((not include or match(layer.name, include))
                        and not match(layer.name, exclude))


def _prune(model, train_ds, config, *, target_sparsity: float, steps: int,
           schedule, loss, seed: int, eval_ds=None,
           original_channels=None):
  """The backend's prune_channels with the config's channel parameters."""
  begin, end, freq = schedule
  return strategy_lib.backend(model, "channels").prune_channels(
      model, train_ds, target_sparsity=target_sparsity,
      ranking=config.channel_ranking, norm=config.channel_norm,
      layer_filter=layer_filter(config.include_layers, config.exclude_layers),
      # Names listed without wildcards must be pruned (or fail, saying why).
      explicit_layers=[p for p in config.include_layers
                       if not any(c in p for c in "*?[")],
      train_steps=steps, finetune_steps=config.finetune_steps,
      begin_step=begin, end_step=end, frequency=freq,
      learning_rate=config.learning_rate, loss=loss, seed=seed,
      eval_ds=eval_ds, original_channels=original_channels)


class ChannelsStrategy:
  """Masks the weakest channels gradually, then rebuilds the model narrower."""

  def prune(self, plain, train_ds, config, run: Run) -> PruneResult:
    result = _prune(plain, train_ds, config,
                    target_sparsity=config.target_sparsity, steps=run.steps,
                    schedule=config.schedule_steps(run.steps), loss=run.loss,
                    seed=config.seed, eval_ds=run.eval_ds)
    return self._result(result, config, run.layers, config.target_sparsity)

  def stage(self, current, train_ds, config, sparsity: float,
            state: Dict[str, Any], *, loss, layers: Sequence[str],
            index: int) -> PruneResult:
    """Removes more channels, counted against the original widths."""
    steps = config.stage_steps()
    first = state["info"]
    result = _prune(current, train_ds, config, target_sparsity=sparsity,
                    steps=steps, schedule=schedules.resolve_schedule(steps),
                    loss=loss,
                    seed=config.seed + index,
                    original_channels=first.get("channels_before"))
    info = dict(result.info)
    if first.get("channels_before"):
      info["channels_before"] = first["channels_before"]
      if "params_before" in first:
        info["params_before"] = first["params_before"]
        info["macs_before"] = first.get("macs_before")
    state["info"] = info
    result.info = info
    return self._result(result, config, layers, sparsity)

  def _result(self, result, config, layers: Sequence[str],
              target_sparsity: float) -> PruneResult:
    info = dict(result.info)
    pruned_layers = list(info.get("channels_kept", {}) or layers)
    return PruneResult(
        model=result.model, structure=config.sparsity_structure,
        pruned_layers=pruned_layers,
        stats=self.stats(result.model, pruned_layers, info), metrics={},
        baseline_metrics={}, info=info, target_sparsity=target_sparsity)

  def sparsities(self, config) -> List[float]:
    return list(config.search_sparsities)

  def stats(self, model, pruned_layers: Sequence[str],
            info: Dict[str, Any]) -> Dict[str, Any]:
    """Channels are removed, not zeroed: the sparsity is the share of the
    pruned layers' channels removed (what target_sparsity asks for);
    param_reduction is the share of all parameters gone."""
    del pruned_layers  # Read from info.
    whole = model_stats.sparsity_stats(model)
    before, after = info.get("params_before"), info.get("params_after")
    return {
        "sparsity": float(info.get("channel_sparsity", 0.0)),
        "param_reduction": 1.0 - after / before if before and after else 0.0,
        "param_count": whole["param_count"],
        "zero_count": whole["zero_count"],
        "gzip_weight_bytes": model_stats.weights_gzip_bytes(
            model_stats.model_weights(model)),
    }

  def export(self, result: PruneResult, original, path: str,
             sample_serialized_examples: Optional[Sequence[bytes]] = None,
             label_key: Optional[str] = None) -> None:
    """Saves the narrow model with the input's signatures re-created for it."""
    strategy_lib.backend(original, "channels").export_narrow_model(
        result.model, original, path, sample_serialized_examples,
        label_key=label_key)
