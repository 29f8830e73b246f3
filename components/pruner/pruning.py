"""Pruning a Keras model as the Pruner's config says: the one function the executor calls.

TFX-free: a Keras model, ``tf.data`` datasets and a :class:`PrunerConfig` in, a
pruned model (written as a SavedModel with the input's serving signatures) out.
The structure's :class:`strategy.Strategy` (unstructured, M:N or channels) does
the pruning and the export; the model's Keras picks the backend (tfmot for
tf_keras models). With ``search_sparsities`` the search (``search.py``) climbs
the same strategy step by step.

Example:

    config = PrunerConfig(label_key="label", target_sparsity=0.8, train_steps=300)
    result = prune_model(model, train_ds, config, eval_ds=eval_ds)
    export_pruned(result, model, "/tmp/pruned")

    # Or everything the executor needs, search included:
    outcome = prune_and_export(model, train_ds, config, "/tmp/pruned",
                               eval_ds=eval_ds, log_dir="/tmp/logs")
    outcome.properties()["sparsity"]
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf

from tfx_compression.components.common import distribute
from tfx_compression.components.common import keras_env
from tfx_compression.components.common import model_stats
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import search as search_lib
from tfx_compression.components.pruner import strategy as strategy_lib
# The result and the errors, where callers have always found them.
from tfx_compression.components.pruner.strategy import NonFiniteLossError  # noqa: F401
from tfx_compression.components.pruner.strategy import PruneResult
from tfx_compression.components.pruner.strategy import PruningError  # noqa: F401
from tfx_compression.components.pruner.strategy import UnsupportedModelError  # noqa: F401


def _log_eval(log_dir: Optional[str], name: str, metrics: Mapping[str, float],
              step: int) -> None:
  if not log_dir or not metrics:
    return
  writer = tf.summary.create_file_writer(f"{log_dir}/eval")
  with writer.as_default():
    for key, value in metrics.items():
      tf.summary.scalar(f"{name}/{key}", value, step=step)
  writer.flush()
  writer.close()


def prune_model(model, train_ds: tf.data.Dataset,
                config: config_lib.PrunerConfig, *,
                eval_ds: Optional[tf.data.Dataset] = None,
                log_dir: Optional[str] = None, loss=None,
                custom_objects: Optional[Dict[str, Any]] = None,
                train_examples: Optional[int] = None) -> PruneResult:
  """Prunes a copy of ``model`` as ``config`` says and measures it.

  The fine-tuning runs under ``config.distribution``'s ``tf.distribute``
  strategy (``common/distribute.py``), or the caller's if called in a scope.

  Args:
    model: the trained Keras model (functional or Sequential). Never modified.
    train_ds: (features, label) batches to fine-tune on (repeated as needed;
      shuffle it with a seed for reproducible results).
    config: the Pruner's parameters.
    eval_ds: finite (features, label) batches for the validation metric.
    log_dir: TensorBoard directory.
    loss: the fine-tuning loss; None: the backend's ``resolve_loss``.
    custom_objects: for rebuilding a custom loss from the training config.
    train_examples: examples in the train split (needed with ``config.epochs``).

  Returns:
    A :class:`PruneResult`.

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    UnsupportedModelError: the backend cannot wrap the model.
    ValueError: a layer pattern matches no prunable layer; the schedule does
      not fit the steps.

  Example:

      result = prune_model(model, train_ds, PrunerConfig(target_sparsity=0.8),
                           eval_ds=eval_ds)
      result.stats["sparsity"]  # ~0.8
  """
  # Clone, compile, fit and evaluate under config.distribution's strategy
  # (none by default on one device); inside a caller's scope, the caller's.
  with distribute.scope(config.distribution):
    return _prune_model(model, train_ds, config, eval_ds=eval_ds,
                        log_dir=log_dir, loss=loss,
                        custom_objects=custom_objects,
                        train_examples=train_examples)


def _prune_model(model, train_ds, config, *, eval_ds, log_dir, loss,
                 custom_objects, train_examples) -> PruneResult:
  backend = strategy_lib.backend(model)
  backend.check_supported(model)
  if loss is None:
    loss, source = backend.resolve_loss(model, custom_objects)
    logging.info("Fine-tuning loss: %s (from the %s).",
                 getattr(loss, "name", loss), source)
  steps = config.total_steps(train_examples)
  if config.m_by_n and config.target_sparsity != config.effective_target_sparsity:
    logging.warning("sparsity_structure=%s sets the sparsity to %.2f; "
                    "target_sparsity=%s is not used.", config.sparsity_structure,
                    config.effective_target_sparsity, config.target_sparsity)
  with backend.deterministic(config.seed):
    plain = backend.clone_model(model)
    layers = backend.select_layers(plain, config.include_layers,
                                   config.exclude_layers, config.m_by_n)
    baseline = backend.evaluate(plain, eval_ds, loss) if eval_ds else {}
    baseline_gzip = model_stats.weights_gzip_bytes(model_stats.model_weights(plain))
  _log_eval(log_dir, "baseline", baseline, 0)

  train_loss, train_ds = strategy_lib.fine_tuning(model, loss, train_ds,
                                                   config)
  run = strategy_lib.Run(loss=train_loss, layers=layers, steps=steps,
                         eval_ds=eval_ds, log_dir=log_dir,
                         train_examples=train_examples)
  result = strategy_lib.for_config(config).prune(plain, train_ds, config, run)
  if config.distills:
    result.model.compile(loss=loss)  # Saved and re-pruned with its own loss.
  result.stats["baseline_gzip_weight_bytes"] = baseline_gzip
  with backend.deterministic(config.seed):
    result.metrics = backend.evaluate(result.model, eval_ds, loss) if eval_ds else {}
  result.baseline_metrics = baseline
  _log_eval(log_dir, "pruned", result.metrics, steps)
  logging.info("Pruned %s: sparsity %.4f, gzip weights %d -> %d bytes, eval "
               "%s -> %s.", config.sparsity_structure, result.stats["sparsity"],
               baseline_gzip, result.stats["gzip_weight_bytes"], baseline,
               result.metrics)
  return result


def export_pruned(result: PruneResult, original, path: str,
                  sample_serialized_examples: Optional[Sequence[bytes]] = None,
                  label_key: Optional[str] = None,
                  source_dir: Optional[str] = None,
                  transform_dir: Optional[str] = None) -> None:
  """Saves the pruned model at ``path`` with the input's serving signatures.

  Unstructured and M:N results keep the input's own signature functions (the
  pruned weights are written into ``original`` for the save, then its own
  weights are put back); 'channels' re-creates them for the narrow model. The
  SavedModel has plain Keras layers only: it loads without tfmot.

  Args:
    result: a :class:`PruneResult`.
    original: the input model as loaded from its SavedModel (it carries
      ``.signatures``).
    path: a local directory to write.
    sample_serialized_examples: a few serialized tf.Examples ('channels' uses
      them to check the regenerated signatures).
    label_key: the label feature ('channels': left out of regenerated
      signatures' parsing).
    source_dir: the input's serving directory (Keras 3 models: their
      signatures are read from it).
    transform_dir: the TransformGraph (Keras 3 models with new shapes).

  Example:

      export_pruned(result, model_io.load_keras_model(src), "/tmp/out")
  """
  if keras_env.is_keras3(result.model):
    # pylint: disable-next=g-import-not-at-top
    from tfx_compression.components.common import keras3_export
    keras3_export.export_keras3(
        result.model, source_dir, path, sample_serialized_examples,
        label_key=label_key, transform_output_dir=transform_dir)
    return
  strategy_lib.for_structure(result.structure).export(
      result, original, path, sample_serialized_examples, label_key=label_key)


@dataclasses.dataclass
class Outcome:
  """What the Pruner produced: the pruned result, and the search if one ran."""
  result: PruneResult
  search: Optional[search_lib.SearchResult] = None

  def properties(self) -> Dict[str, Any]:
    """Custom properties for the output Model."""
    if self.search is not None:
      return self.search.properties()
    return self.result.properties()


def prune_and_export(model, train_ds: tf.data.Dataset,
                     config: config_lib.PrunerConfig, export_dir: str, *,
                     eval_ds: Optional[tf.data.Dataset] = None,
                     log_dir: Optional[str] = None,
                     custom_objects: Optional[Mapping[str, Any]] = None,
                     train_examples: Optional[int] = None,
                     sample_serialized_examples: Optional[Sequence[bytes]] = None,
                     source_dir: Optional[str] = None,
                     transform_dir: Optional[str] = None) -> Outcome:
  """Prunes (or, with ``search_sparsities``, searches) and writes the SavedModel.

  Args:
    model: the trained Keras model, as loaded with its serving signatures.
      Never modified.
    train_ds, eval_ds, log_dir, custom_objects, train_examples: as for
      :func:`prune_model`.
    config: the Pruner's parameters.
    export_dir: a local directory for the pruned SavedModel.
    sample_serialized_examples: for checking re-created signatures.
    source_dir, transform_dir: see :func:`export_pruned`.

  Returns:
    The :class:`Outcome`.

  Example:

      outcome = prune_and_export(model, train_ds, config, "/tmp/m",
                                 eval_ds=eval_ds)
  """
  searched = None
  # The search's fine-tuning too; the export runs outside (it needs no strategy).
  with distribute.scope(config.distribution):
    if config.is_search:
      loss, _ = strategy_lib.backend(model).resolve_loss(model, custom_objects)
      searched = search_lib.search_sparsity(model, train_ds, eval_ds, config,
                                            config.gate(), loss=loss,
                                            log_dir=log_dir)
      result = searched.prune_result
    else:
      result = prune_model(model, train_ds, config, eval_ds=eval_ds,
                           log_dir=log_dir, custom_objects=custom_objects,
                           train_examples=train_examples)
  export_pruned(result, model, export_dir, sample_serialized_examples,
                label_key=config.label_key, source_dir=source_dir,
                transform_dir=transform_dir)
  return Outcome(result, searched)
