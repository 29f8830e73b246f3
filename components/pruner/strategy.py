"""What every pruning structure shares: the result, the errors, the protocol, the backends.

A structure ('unstructured', 'M:N', 'channels') is a :class:`Strategy`: it prunes
a model, measures what it pruned, continues a search step from the previous
step's model, and exports the result. :func:`prune_model` and the search only
choose the strategy (:func:`for_config`) and delegate.

Each strategy works on the model's own Keras: a tf_keras (Keras 2) model is
pruned with tensorflow-model-optimization (``keras2_magnitude``), a Keras 3
model by the Keras 3 backend (``keras3_magnitude``). Backends are imported when
a model of their Keras is pruned, never before: importing tfmot sets
``TF_USE_LEGACY_KERAS=1``.

Example:

    strategy = for_config(config)             # e.g. the 'channels' strategy
    result = strategy.prune(plain, train_ds, config, run)
    strategy.export(result, original, "/tmp/out", samples, label_key="label")
"""

import dataclasses
import fnmatch
import importlib
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

from tfx_compression.components.common import keras_env


class PruningError(RuntimeError):
  """Fine-tuning failed (e.g. the loss became NaN); no model may be emitted."""


class NonFiniteLossError(PruningError):
  """The fine-tuning loss became NaN or infinite."""


class UnsupportedModelError(ValueError):
  """The model is of a kind the pruning backend cannot wrap."""


@dataclasses.dataclass
class PruneResult:
  """What :func:`prune_model` produced.

  Attributes:
    model: the pruned Keras model (wrappers stripped; for 'channels', the
      narrower model).
    structure: the sparsity structure used.
    pruned_layers: names of the layers pruned.
    stats: sizes and sparsity (see :meth:`Strategy.stats`).
    metrics: eval metrics of the pruned model ({} without eval data).
    baseline_metrics: the same metrics of the input model.
    info: structure-specific details (channels: channels kept, params, MACs).
    target_sparsity: the sparsity aimed at (M/N for an M:N structure).
  """
  model: Any
  structure: str
  pruned_layers: List[str]
  stats: Dict[str, Any]
  metrics: Dict[str, float]
  baseline_metrics: Dict[str, float]
  info: Dict[str, Any]
  target_sparsity: float

  def properties(self) -> Dict[str, Any]:
    """Flat name -> number/string, for custom properties of the artifact."""
    props = dict(self.info)  # structure-specific first: the common names win
    props.update(self.stats)
    props["sparsity_structure"] = self.structure
    props["target_sparsity"] = self.target_sparsity
    props["pruned_layers"] = ",".join(self.pruned_layers)
    for name, value in self.metrics.items():
      props[f"eval_{name}"] = value
    for name, value in self.baseline_metrics.items():
      props[f"baseline_eval_{name}"] = value
    return props


@dataclasses.dataclass(frozen=True)
class Run:
  """What one fixed pruning run is given besides the model, data and config.

  Attributes:
    loss: the fine-tuning loss.
    layers: the layers selected for pruning (tfmot's notion of prunable).
    steps: fine-tuning steps.
    eval_ds: finite (features, label) batches, or None.
    log_dir: TensorBoard directory, or None.
    train_examples: examples in the train split (with ``config.epochs``).
  """
  loss: Any
  layers: Sequence[str]
  steps: int
  eval_ds: Any = None
  log_dir: Optional[str] = None
  train_examples: Optional[int] = None


class Strategy(Protocol):
  """One sparsity structure. Implementations: unstructured, m_by_n, channels."""

  def prune(self, plain, train_ds, config, run: Run) -> PruneResult:
    """Prunes ``plain`` (a copy the caller owns) as ``config`` says.

    Returns a result whose ``metrics`` and ``baseline_metrics`` are empty:
    the caller evaluates.
    """

  def stage(self, current, train_ds, config, sparsity: float,
            state: Dict[str, Any], *, loss, layers: Sequence[str],
            index: int) -> PruneResult:
    """One search step: prunes ``current`` (the last step's model) on to
    ``sparsity``; ``state`` carries what later steps need."""

  def sparsities(self, config) -> List[float]:
    """The search's sparsities, as this structure can reach them."""

  def stats(self, model, pruned_layers: Sequence[str],
            info: Dict[str, Any]) -> Dict[str, Any]:
    """Achieved sparsity and sizes of a pruned model."""

  def export(self, result: PruneResult, original, path: str,
             sample_serialized_examples: Optional[Sequence[bytes]] = None,
             label_key: Optional[str] = None) -> None:
    """Writes a tf_keras ``result.model`` at ``path`` with ``original``'s
    signatures (Keras 3 models: ``keras3_export``, the same for every
    structure)."""


def matches(name: str, patterns: Sequence[str]) -> bool:
  """True if a layer name matches one of the fnmatch ``patterns``."""
  return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def match_layers(names: Sequence[str], include: Sequence[str] = (),
                 exclude: Sequence[str] = (),
                 m_by_n: Optional[Tuple[int, int]] = None,
                 without_blocks: Sequence[str] = ()) -> List[str]:
  """The layers to prune among ``names``, from include/exclude patterns.

  Shared by the backends' ``select_layers`` (one rule, one message for both
  Kerases).

  Args:
    names: the prunable layers, in the model's order.
    include: patterns; empty means every prunable layer.
    exclude: patterns of layers never to prune.
    m_by_n: (M, N) when pruning M:N blocks.
    without_blocks: prunable layers left out of ``names`` because their input
      dimension is not a multiple of N (named in the errors).

  Raises:
    ValueError: a pattern matches no prunable layer, or nothing is left.

  Example:

      match_layers(["conv1", "conv2", "out"], include=["conv*"])  # conv1, conv2
  """
  names = list(names)
  note = ""
  if m_by_n and without_blocks:
    note = (f" ({list(without_blocks)} cannot take {m_by_n[0]}:{m_by_n[1]} "
            "blocks: their input dimension is not a multiple of "
            f"{m_by_n[1]}.)")
  for parameter, patterns in (("include_layers", include),
                              ("exclude_layers", exclude)):
    for pattern in patterns:
      if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
        raise ValueError(
            f"`{parameter}` pattern {pattern!r} matches no prunable layer. "
            f"Prunable layers: {names}.{note} Patterns are fnmatch patterns on "
            "layer names, e.g. 'conv*'.")
  selected = [n for n in names if (not include or matches(n, include))
              and not matches(n, exclude)]
  if not selected:
    raise ValueError(
        f"No layer is left to prune (include_layers={list(include)}, "
        f"exclude_layers={list(exclude)}; prunable layers: {names}).{note} "
        "Loosen the patterns.")
  return selected


def for_structure(structure: str) -> Strategy:
  """The strategy of a ``sparsity_structure`` ('unstructured', 'channels', 'M:N')."""
  # pylint: disable=g-import-not-at-top
  if structure == "channels":
    from tfx_compression.components.pruner import channels
    return channels.ChannelsStrategy()
  if ":" in structure:
    from tfx_compression.components.pruner import m_by_n
    return m_by_n.MByNStrategy()
  from tfx_compression.components.pruner import unstructured
  return unstructured.UnstructuredStrategy()


def for_config(config) -> Strategy:
  """The strategy of ``config.sparsity_structure``."""
  return for_structure(config.sparsity_structure)


def backend(model, kind: str = "magnitude"):
  """The module that prunes ``model`` for ``kind`` ('magnitude' or 'channels').

  tf_keras models (and anything that is not a Keras 3 model, which the Keras 2
  backend then refuses clearly) go to ``keras2_<kind>``; Keras 3 models to
  ``keras3_<kind>``.

  Raises:
    UnsupportedModelError: a Keras 3 model and no Keras 3 backend for ``kind``.
  """
  package = "tfx_compression.components.pruner"
  if not keras_env.is_keras3(model):
    return importlib.import_module(f"{package}.keras2_{kind}")
  try:
    return importlib.import_module(f"{package}.keras3_{kind}")
  except ModuleNotFoundError as e:
    if e.name != f"{package}.keras3_{kind}":
      raise
    raise UnsupportedModelError(
        f"The model is a Keras 3 model ({type(model).__name__}); "
        f"{'channel' if kind == 'channels' else kind} pruning of Keras 3 "
        "models is not available. Use sparsity_structure='unstructured' or an "
        "M:N structure, or save the model with tf_keras (Keras 2).") from e


def fine_tuning(model, loss, train_ds, config) -> Tuple[Any, Any]:
  """(the loss, the train batches) every fine-tuning of ``config`` trains on.

  With ``config.distills``: the distillation loss and the batches carrying the
  teacher's outputs, the teacher being ``model`` cloned once and frozen
  (``common/distillation.py``); a search reuses them for every step, so the
  teacher stays the input model. Else ``loss`` and ``train_ds`` unchanged.

  Example:

      train_loss, train_ds = fine_tuning(model, loss, train_ds, config)
  """
  if not config.distills:
    return loss, train_ds
  # Imported here: this module stays free of TensorFlow until a model is pruned.
  from tfx_compression.components.common import distillation  # pylint: disable=g-import-not-at-top
  backend_ = backend(model)
  with backend_.deterministic(config.seed):
    teacher = backend_.clone_model(model)  # Frozen; the pruning never sees it.
  return distillation.for_model(
      model, teacher, loss, train_ds, weight=config.distillation_weight,
      temperature=config.distillation_temperature)


def output_activation(model) -> Optional[str]:
  """The name of a single-output model's last activation ('softmax', ...)."""
  if len(model.outputs) != 1:
    return None
  activation = getattr(model.layers[-1], "activation", None)
  return getattr(activation, "__name__", None)


def default_loss(model, losses, saved_in: str) -> Tuple[Any, str]:
  """The cross-entropy a model with no recorded loss is fine-tuned with.

  Args:
    model: a tf_keras or Keras 3 model.
    losses: that Keras' ``losses`` module.
    saved_in: where a compiled model keeps its loss ("SavedModel", "model file"),
      for the error.

  Returns:
    (loss, how it was chosen).

  Raises:
    ValueError: the model has several outputs, so no loss can be guessed.
  """
  if len(model.outputs) != 1:
    raise ValueError(
        f"The model has {len(model.outputs)} outputs and no recorded loss; "
        "the Pruner cannot guess one. Save the model compiled (model.compile "
        f"before model.save) so its loss is kept in the {saved_in}.")
  activation = output_activation(model)
  if model.outputs[0].shape[-1] == 1:
    from_logits = activation != "sigmoid"
    return (losses.BinaryCrossentropy(from_logits=from_logits),
            f"default (binary, from_logits={from_logits})")
  from_logits = activation != "softmax"
  return (losses.SparseCategoricalCrossentropy(from_logits=from_logits),
          f"default (sparse categorical, from_logits={from_logits})")
