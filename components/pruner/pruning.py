"""Magnitude pruning of a tf_keras model with tensorflow-model-optimization.

TFX-free: a Keras model, a ``tf.data`` dataset and a :class:`PrunerConfig` in, a
pruned Keras model out. What a user would write by hand from the tfmot guide:

1. clone the model (tfmot wraps the layer objects it is given, so the caller's
   model is never touched);
2. wrap the selected layers with ``prune_low_magnitude`` (a PolynomialDecay or
   ConstantSparsity schedule, or an M:N mask);
3. fine-tune with ``UpdatePruningStep`` (and ``PruningSummaries`` for TensorBoard);
4. ``strip_pruning``, leaving plain Keras layers with zeros in their kernels.

:func:`prune_to` is one such stage from the model's current weights, so an
iterative search can call it again on its result to reach a higher sparsity.
:func:`export_pruned` writes the result with the input's serving signatures.

Example:

    config = PrunerConfig(label_key="label", target_sparsity=0.8, train_steps=300)
    result = prune_model(model, train_ds, config, eval_ds=eval_ds)
    export_pruned(result, model, "/tmp/pruned")
"""

import contextlib
import dataclasses
import fnmatch
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfx_compression.components.common import model_io
from tfx_compression.components.common import model_stats
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import schedules

_sparsity = tfmot.sparsity.keras


class PruningError(RuntimeError):
  """Fine-tuning failed (e.g. the loss became NaN); no model may be emitted."""


class NonFiniteLossError(PruningError):
  """The fine-tuning loss became NaN or infinite."""


class UnsupportedModelError(ValueError):
  """The model is of a kind tfmot cannot wrap."""


@dataclasses.dataclass
class PruneResult:
  """What :func:`prune_model` produced.

  Attributes:
    model: the pruned tf_keras model (wrappers stripped; for 'channels', the
      narrower model).
    structure: the sparsity structure used.
    pruned_layers: names of the layers pruned.
    stats: sizes and sparsity (see :func:`pruning_stats`).
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


# Which layers can be pruned.


def _walk_layers(model):
  """Layers of a model, descending into nested models."""
  for layer in model.layers:
    if isinstance(layer, tf_keras.Model):
      yield from _walk_layers(layer)
    else:
      yield layer


def _prunable_weights(layer) -> list:
  """The weights tfmot prunes in ``layer`` ([] if it cannot or has none)."""
  if isinstance(layer, pruning_wrapper.PruneLowMagnitude):
    layer = layer.layer
  if isinstance(layer, _sparsity.PrunableLayer) or hasattr(
      layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  registry = prune_registry.PruneRegistry
  if not registry.supports(layer):
    return []
  if registry._is_rnn_layer(layer) or registry._is_mha_layer(layer):  # pylint: disable=protected-access
    # Nested weight lookups: let tfmot attach its accessor (harmless: it only
    # adds the method tfmot's wrapper would add anyway).
    return list(registry.make_prunable(layer).get_prunable_weights())
  return [getattr(layer, name) for name in registry._weight_names(layer)]  # pylint: disable=protected-access


def _m_by_n_ok(weight, m_by_n: Tuple[int, int]) -> bool:
  # Blocks run along the input dimension (axis -2 of a Dense or Conv kernel);
  # a dimension that is not a multiple of N has no full block to sparsify.
  return weight.shape.rank in (2, 4) and weight.shape[-2] % m_by_n[1] == 0


def prunable_layers(model, m_by_n: Optional[Tuple[int, int]] = None
                   ) -> "Dict[str, Any]":
  """Name -> layer for every layer tfmot can prune (with an M:N block if given).

  A layer counts when tfmot supports it (built-in Dense, Conv, Embedding, RNN
  ... or a ``PrunableLayer``) and it has weights to prune.

  Example:

      list(prunable_layers(model))  # ['conv1', 'conv2', 'dense1', 'probabilities']
  """
  out = {}
  for layer in _walk_layers(model):
    weights = _prunable_weights(layer)
    if not weights:
      continue
    if m_by_n and not all(_m_by_n_ok(w, m_by_n) for w in weights):
      continue
    out[layer.name] = layer
  return out


def _match(name: str, patterns: Sequence[str]) -> bool:
  return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_layers(model, include: Sequence[str] = (),
                  exclude: Sequence[str] = (),
                  m_by_n: Optional[Tuple[int, int]] = None) -> List[str]:
  """Names of the layers to prune, from fnmatch patterns on layer names.

  Args:
    model: a functional or Sequential tf_keras model.
    include: patterns; empty means every prunable layer.
    exclude: patterns of layers never to prune.
    m_by_n: (M, N) when pruning M:N blocks (layers whose input dimension is not
      a multiple of N are not prunable then).

  Returns:
    Layer names, in the model's order.

  Raises:
    ValueError: a pattern matches no prunable layer, or nothing is left.

  Example:

      select_layers(model, include=["conv*", "dense1"])  # ['conv1', 'conv2', 'dense1']
  """
  check_supported(model)
  names = list(prunable_layers(model, m_by_n))
  note = ""
  if m_by_n:
    others = [n for n in prunable_layers(model) if n not in names]
    if others:
      note = (f" ({others} cannot take {m_by_n[0]}:{m_by_n[1]} blocks: their "
              f"input dimension is not a multiple of {m_by_n[1]}.)")
  for parameter, patterns in (("include_layers", include),
                              ("exclude_layers", exclude)):
    for pattern in patterns:
      if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
        raise ValueError(
            f"`{parameter}` pattern {pattern!r} matches no prunable layer. "
            f"Prunable layers: {names}.{note} Patterns are fnmatch patterns on "
            "layer names, e.g. 'conv*'.")
  selected = [n for n in names
              if (not include or _match(n, include)) and not _match(n, exclude)]
  if not selected:
    raise ValueError(
        f"No layer is left to prune (include_layers={list(include)}, "
        f"exclude_layers={list(exclude)}; prunable layers: {names}).{note} "
        "Loosen the patterns.")
  return selected


def check_supported(model) -> None:
  """Raises UnsupportedModelError unless tfmot can wrap ``model``'s layers."""
  if not isinstance(model, tf_keras.Model):
    raise UnsupportedModelError(
        f"The model is a {type(model).__name__}, not a tf_keras Model; the "
        "Pruner needs a Keras (tf_keras) functional or Sequential model.")
  if isinstance(model, tf_keras.Sequential) or getattr(
      model, "_is_graph_network", False):
    return
  layers = [f"{l.name} ({type(l).__name__})" for l in model.layers]
  can = [l.name for l in model.layers if _prunable_weights(l)]
  raise UnsupportedModelError(
      f"The model is a subclassed Keras model ({type(model).__name__}), which "
      "tfmot cannot wrap: prune_low_magnitude only rebuilds Sequential and "
      f"functional models. Its layers: {layers or 'none tracked'}; of these tfmot "
      f"supports {can or 'none'}. Build the model with the functional API "
      "(keras.Model(inputs, outputs)) or keras.Sequential in the Trainer "
      "module.")


# Cloning, wrapping, stripping.


def clone_model(model):
  """A copy with the same weights (new layer objects and variables)."""
  check_supported(model)
  try:
    clone = tf_keras.models.clone_model(model)
  except NotImplementedError:
    # A layer tracked outside the graph and revived without a config (TFX's
    # `model.tft_layer` when the Trainer used Transform) stops Keras' cloning,
    # which serializes every tracked layer. Rebuild the graph from its nodes
    # instead: new layers, the same weights, the attached layer left out.
    # pylint: disable=g-import-not-at-top
    from tfx_compression.components.pruner import channel_graph
    from tfx_compression.components.pruner import channel_rebuild
    # pylint: enable=g-import-not-at-top
    clone = channel_rebuild.rebuild_narrow(channel_graph.analyze(model), {})
    logging.info("Cloned %s from its graph (a layer outside the graph has no "
                 "config).", model.name)
    return clone
  clone.set_weights(model.get_weights())
  return clone


def is_wrapped(model) -> bool:
  return any(isinstance(l, pruning_wrapper.PruneLowMagnitude)
             for l in _walk_layers(model))


def _wrap(model, names: Sequence[str], params: Mapping[str, Any]):
  """A model whose selected layers are wrapped; reuses ``model``'s layers."""
  names = set(names)

  def clone_fn(layer):
    if isinstance(layer, tf_keras.Model):
      return tf_keras.models.clone_model(layer, clone_function=clone_fn)
    if layer.name in names:
      return _sparsity.prune_low_magnitude(layer, **params)
    return layer

  return tf_keras.models.clone_model(model, clone_function=clone_fn)


# Loss and evaluation.


def _output_activation(model) -> Optional[str]:
  if len(model.outputs) != 1:
    return None
  layer = model.layers[-1]
  activation = getattr(layer, "activation", None)
  return getattr(activation, "__name__", None)


def _deserialize_loss(cfg, custom_objects):
  if cfg is None:
    return None
  if isinstance(cfg, str):
    return tf_keras.losses.get(cfg)
  if isinstance(cfg, dict) and "class_name" in cfg:
    return tf_keras.losses.deserialize(cfg, custom_objects=custom_objects)
  if isinstance(cfg, dict):
    return {k: _deserialize_loss(v, custom_objects) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [_deserialize_loss(v, custom_objects) for v in cfg]
  return None


def resolve_loss(model, custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; the loss recorded in the SavedModel's
  training config (a model loaded with compile=False keeps it); else a
  cross-entropy matching the output: BinaryCrossentropy for one output unit,
  SparseCategoricalCrossentropy (integer class labels) otherwise, with
  ``from_logits`` unless the output layer applies sigmoid/softmax.

  Example:

      loss, source = resolve_loss(model)  # (SparseCategoricalCrossentropy, 'training config')
  """
  if getattr(model, "loss", None) is not None and getattr(
      model, "optimizer", None) is not None:
    return model.loss, "compiled model"
  attributes = getattr(model, "_serialized_attributes", None) or {}
  training_config = (attributes.get("metadata") or {}).get("training_config")
  if training_config and training_config.get("loss") is not None:
    try:
      loss = _deserialize_loss(training_config["loss"], custom_objects)
      if loss is not None:
        return loss, "training config"
    except (ValueError, TypeError) as e:
      logging.warning("The saved loss could not be rebuilt (%s); using the "
                      "default cross-entropy. Declare custom losses in the "
                      "module_file's custom_objects.", e)
  if len(model.outputs) != 1:
    raise ValueError(
        f"The model has {len(model.outputs)} outputs and no recorded loss; "
        "the Pruner cannot guess one. Save the model compiled (model.compile "
        "before model.save) so its loss is kept in the SavedModel.")
  activation = _output_activation(model)
  units = model.outputs[0].shape[-1]
  if units == 1:
    from_logits = activation != "sigmoid"
    return (tf_keras.losses.BinaryCrossentropy(from_logits=from_logits),
            f"default (binary, from_logits={from_logits})")
  from_logits = activation != "softmax"
  return (tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
          f"default (sparse categorical, from_logits={from_logits})")


def _accuracy_metric(model, loss):
  name = type(loss).__name__ if not isinstance(loss, str) else loss
  name = name.lower()
  from_logits = bool(getattr(loss, "get_config", lambda: {})().get(
      "from_logits", False))
  if "binary" in name or (len(model.outputs) == 1
                          and model.outputs[0].shape[-1] == 1):
    return tf_keras.metrics.BinaryAccuracy(
        name="accuracy", threshold=0.0 if from_logits else 0.5)
  if name.startswith("categorical"):
    return tf_keras.metrics.CategoricalAccuracy(name="accuracy")
  return tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  model.compile(loss=loss, metrics=[_accuracy_metric(model, loss)])
  values = model.evaluate(dataset, verbose=0, return_dict=True)
  return {k: float(v) for k, v in values.items()}


# Fine-tuning.


class _StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
  """Like TerminateOnNaN, but raises: a NaN model must never be emitted."""

  def __init__(self, learning_rate: float):
    super().__init__()
    self._learning_rate = learning_rate

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is not None and not math.isfinite(float(loss)):
      step = int(self.model.optimizer.iterations.numpy())
      raise NonFiniteLossError(
          f"The fine-tuning loss became {float(loss)} at step {step}; "
          "fine-tuning stopped and no model was written. Lower "
          f"`learning_rate` (now {self._learning_rate:g}), check the train "
          "split for NaN or infinite feature values, or check the model's "
          "loss.")


@contextlib.contextmanager
def deterministic(seed: int):
  """Seeds Python, NumPy and TensorFlow, and makes TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was_enabled = tf_config.is_op_determinism_enabled()
  tf_keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_enabled:
      tf_config.disable_op_determinism()


class ContinuedPruning:
  """One wrapped, compiled model pruned further stage after stage.

  What an iterative search needs: each stage ramps the sparsity from the last
  stage's to the next target and fine-tunes from the current weights, without
  cloning, re-wrapping, recompiling or retracing (each of those costs seconds
  per stage on a small model, more than the fine-tuning itself). The Adam state
  carries over from stage to stage, as in one longer training run.

  ``model`` (the plain view) shares its variables with the wrapped model: it
  always holds the current weights, zeros included. Copy it
  (:func:`clone_model`) to keep a stage's result.

  Example:

      run = ContinuedPruning(model, layers, loss=loss)
      run.stage(ds, 0.0, 0.5, steps=300); run.model  # 50% sparse
      run.stage(ds, 0.5, 0.7, steps=300); run.model  # 70%, from those weights
  """

  def __init__(self, model, layers: Sequence[str], *, loss,
               schedule: str = "polynomial", learning_rate: float = 1e-3,
               seed: int = 0):
    check_supported(model)
    if is_wrapped(model):
      model = _sparsity.strip_pruning(model)
    self.learning_rate = learning_rate
    self.seed = seed
    self.steps_done = 0
    self._schedule_name = schedule
    self._schedule = None
    self._layers = list(layers)
    with deterministic(seed):
      self._plain = clone_model(model)
    self._wrapped = None
    self._loss = loss
    self.model = self._plain

  def _build(self, frequency: int) -> None:
    self._schedule = schedules.StagedSchedule(self._schedule_name, frequency)
    with deterministic(self.seed):
      self._wrapped = _wrap(self._plain, self._layers,
                            {"pruning_schedule": self._schedule})
      self._wrapped.compile(
          optimizer=tf_keras.optimizers.Adam(self.learning_rate),
          loss=self._loss)
    # The wrappers hold the very layers of self._plain: stripping gives a plain
    # model over the same variables.
    self.model = _sparsity.strip_pruning(self._wrapped)

  def stage(self, train_ds: tf.data.Dataset, initial_sparsity: float,
            target_sparsity: float, steps: int, seed: Optional[int] = None):
    """Ramps from ``initial_sparsity`` to ``target_sparsity`` over ``steps``.

    Returns:
      The plain model (the shared view) after the stage.
    """
    begin, end, freq = schedules.resolve_schedule(steps, 0, None, None)
    if self._wrapped is None:
      self._build(freq)
    elif freq != self._schedule.frequency:
      raise ValueError(f"Every stage must have the same length (first: "
                       f"frequency {self._schedule.frequency}, now {freq}).")
    self._schedule.set_stage(initial_sparsity, target_sparsity,
                             self.steps_done + begin + 1,
                             self.steps_done + end + 1)
    logging.info("Pruning %s from %.3f to %.3f: mask updates at steps %d..%d "
                 "every %d (of %d).", self._layers, initial_sparsity,
                 target_sparsity, self.steps_done + begin,
                 self.steps_done + end, freq, self.steps_done + steps)
    with deterministic(self.seed if seed is None else seed):
      self._wrapped.fit(
          train_ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0,
          callbacks=[_sparsity.UpdatePruningStep(),
                     _StopOnNonFiniteLoss(self.learning_rate)])
    self.steps_done += steps
    check_finite(self.model, self.learning_rate)
    return self.model


def prune_to(model, train_ds: tf.data.Dataset, *, target_sparsity: float,
             steps: int, loss, layers: Optional[Sequence[str]] = None,
             initial_sparsity: float = 0.0, schedule: str = "polynomial",
             begin_step: int = 0, end_step: Optional[int] = None,
             frequency: Optional[int] = None,
             m_by_n: Optional[Tuple[int, int]] = None,
             learning_rate: float = 1e-3, seed: int = 0,
             log_dir: Optional[str] = None,
             steps_per_epoch: Optional[int] = None,
             callbacks: Sequence[tf_keras.callbacks.Callback] = ()):
  """Prunes a copy of ``model`` from its current weights; returns it stripped.

  One pruning stage: the schedule ramps from ``initial_sparsity`` to
  ``target_sparsity``. Weights already zero have the least magnitude, so a
  model pruned to sparsity a and pruned again with initial_sparsity=a keeps its
  zeros and goes on to the new target: an iterative search calls this stage
  after stage (the Adam state starts afresh at each stage).

  Args:
    model: functional or Sequential tf_keras model, plain or still wrapped by
      tfmot (then stripped first). Never modified.
    train_ds: (features, label) batches; repeated if it runs out.
    target_sparsity: fraction of zeros in each pruned kernel at the end
      (ignored with ``m_by_n``).
    steps: optimizer steps.
    loss: Keras loss (see :func:`resolve_loss`).
    layers: names of layers to prune; None: every prunable layer.
    initial_sparsity: sparsity at ``begin_step`` (polynomial schedule).
    schedule: 'polynomial' or 'constant'.
    begin_step, end_step, frequency: when the mask is updated, counted from 0;
      None end_step/frequency are chosen as in
      :func:`config.resolve_schedule`.
    m_by_n: (M, N): M zeros in every N consecutive input weights, set once at
      the first step; the whole fine-tuning then recovers.
    learning_rate: Adam learning rate.
    seed: seed for TensorFlow ops (and the global seeds).
    log_dir: TensorBoard directory (training and tfmot pruning summaries).
    steps_per_epoch: Keras epoch length; must divide ``steps``.
    callbacks: more Keras callbacks.

  Returns:
    A new tf_keras model with plain layers and sparse kernels.

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    UnsupportedModelError: a subclassed model.

  Example:

      half = prune_to(model, ds, target_sparsity=0.5, steps=200, loss=loss)
      more = prune_to(half, ds, initial_sparsity=0.5, target_sparsity=0.7,
                      steps=200, loss=loss)
  """
  check_supported(model)
  if is_wrapped(model):
    model = _sparsity.strip_pruning(model)
  with deterministic(seed):
    plain = clone_model(model)
    if layers is None:
      layers = select_layers(plain, m_by_n=m_by_n)
    if m_by_n:
      # tfmot sets an M:N mask once, at step 1, whatever the schedule says.
      pruning_schedule = _sparsity.ConstantSparsity(
          m_by_n[0] / m_by_n[1], begin_step=1, end_step=1, frequency=1)
      params = {"pruning_schedule": pruning_schedule,
                "sparsity_m_by_n": tuple(m_by_n)}
    else:
      begin, end, freq = schedules.resolve_schedule(steps, begin_step,
                                                     end_step, frequency)
      params = {"pruning_schedule": schedules.make_schedule(
          target_sparsity, initial_sparsity, schedule, begin, end, freq)}
      logging.info("Pruning %s to %.3f: %s schedule, mask updates at steps "
                   "%d..%d every %d, %d steps in all.", list(layers),
                   target_sparsity, schedule, begin, end, freq, steps)
    wrapped = _wrap(plain, layers, params)
    wrapped.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                    loss=loss)
    # Several epochs only serve the TensorBoard logs (see epoch_length).
    epoch = steps_per_epoch or (schedules.epoch_length(steps) if log_dir else steps)
    if steps % epoch:
      raise ValueError(f"steps_per_epoch={epoch} does not divide steps={steps}.")
    cbs = [_sparsity.UpdatePruningStep(), _StopOnNonFiniteLoss(learning_rate)]
    if log_dir:
      cbs.append(_sparsity.PruningSummaries(log_dir=log_dir))
    cbs.extend(callbacks)
    wrapped.fit(train_ds.repeat(), steps_per_epoch=epoch,
                epochs=steps // epoch, callbacks=cbs, verbose=0)
    # UpdatePruningStep re-applies the masks at each epoch end, so the
    # stripped kernels hold exact zeros.
    stripped = _sparsity.strip_pruning(wrapped)
  check_finite(stripped, learning_rate)
  return stripped


def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite.

  A clipped loss (cross-entropy on probabilities) can stay finite while the
  weights have gone NaN, so the loss check alone is not enough.
  """
  bad = [w.name for w in model.weights if not np.isfinite(w.numpy()).all()]
  if bad:
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    raise NonFiniteLossError(
        f"Fine-tuning left NaN or infinite weights in {bad}; no model was "
        f"written. Lower `learning_rate`{lr}, check the train split for NaN or "
        "infinite feature values, or check the model's loss.")


# Measuring.


def pruned_kernels(model, layers: Sequence[str]) -> Dict[str, np.ndarray]:
  """'layer/weight' -> array of the weights tfmot prunes in ``layers``."""
  by_name = {l.name: l for l in _walk_layers(model)}
  out = {}
  for name in layers:
    for w in _prunable_weights(by_name[name]):
      out[f"{name}/{w.name.split('/')[-1].split(':')[0]}"] = w.numpy()
  return out


def m_by_n_violations(kernel: np.ndarray, m_by_n: Tuple[int, int]) -> int:
  """Blocks of N consecutive input weights holding fewer than M zeros.

  The input dimension is axis -2 (Dense [in, out], Conv [h, w, in, out]); a
  last partial block counts as padded with zeros, as tfmot pads it.
  """
  m, n = m_by_n
  rows = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])
  pad = (-rows.shape[1]) % n
  rows = np.pad(rows, [(0, 0), (0, pad)])
  zeros = (rows.reshape(rows.shape[0], -1, n) == 0).sum(axis=-1)
  return int((zeros < m).sum())


def pruning_stats(model, layers: Sequence[str]) -> Dict[str, Any]:
  """Achieved sparsity over the pruned kernels, and the model's sizes.

  Returns:
    sparsity (zeros / size over the pruned layers' kernels), pruned_param_count,
    pruned_zero_count, param_count and zero_count (every weight),
    gzip_weight_bytes (gzip of all weights).
  """
  kernels = pruned_kernels(model, layers)
  size = sum(k.size for k in kernels.values())
  zeros = sum(int((k == 0).sum()) for k in kernels.values())
  whole = model_stats.sparsity_stats(model)
  return {
      "sparsity": zeros / size if size else 0.0,
      "pruned_param_count": int(size),
      "pruned_zero_count": int(zeros),
      "param_count": whole["param_count"],
      "zero_count": whole["zero_count"],
      "gzip_weight_bytes": model_stats.weights_gzip_bytes(model.get_weights()),
  }


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


# The whole job.


def layer_filter(include: Sequence[str], exclude: Sequence[str]
                ) -> Optional[Callable[[Any], bool]]:
  """callable(layer) -> bool from include/exclude patterns (None: all)."""
  if not include and not exclude:
    return None
  return lambda layer: ((not include or _match(layer.name, include))
                        and not _match(layer.name, exclude))


def prune_model(model, train_ds: tf.data.Dataset,
                config: config_lib.PrunerConfig, *,
                eval_ds: Optional[tf.data.Dataset] = None,
                log_dir: Optional[str] = None, loss=None,
                custom_objects: Optional[Dict[str, Any]] = None,
                train_examples: Optional[int] = None) -> PruneResult:
  """Prunes a copy of ``model`` as ``config`` says and measures it.

  Args:
    model: the trained tf_keras model (functional or Sequential). Never
      modified.
    train_ds: (features, label) batches to fine-tune on (repeated as needed;
      shuffle it with a seed for reproducible results).
    config: the Pruner's parameters.
    eval_ds: finite (features, label) batches for the validation metric.
    log_dir: TensorBoard directory.
    loss: the fine-tuning loss; None: :func:`resolve_loss`.
    custom_objects: for rebuilding a custom loss from the training config.
    train_examples: examples in the train split (needed with ``config.epochs``).

  Returns:
    A :class:`PruneResult`.

  Raises:
    NonFiniteLossError: the loss became NaN or infinite.
    UnsupportedModelError: tfmot cannot wrap the model.
    ValueError: a layer pattern matches no prunable layer; the schedule does
      not fit the steps.

  Example:

      result = prune_model(model, train_ds, PrunerConfig(target_sparsity=0.8),
                           eval_ds=eval_ds)
      result.stats["sparsity"]  # ~0.8
  """
  check_supported(model)
  if loss is None:
    loss, source = resolve_loss(model, custom_objects)
    logging.info("Fine-tuning loss: %s (from the %s).",
                 getattr(loss, "name", loss), source)
  steps = config.total_steps(train_examples)
  m_by_n = config.m_by_n
  if m_by_n and config.target_sparsity != config.effective_target_sparsity:
    logging.warning("sparsity_structure=%s sets the sparsity to %.2f; "
                    "target_sparsity=%s is not used.", config.sparsity_structure,
                    config.effective_target_sparsity, config.target_sparsity)
  with deterministic(config.seed):
    plain = clone_model(model)
    layers = select_layers(plain, config.include_layers,
                           config.exclude_layers, m_by_n)
    baseline = evaluate(plain, eval_ds, loss) if eval_ds else {}
    baseline_gzip = model_stats.weights_gzip_bytes(plain.get_weights())
  _log_eval(log_dir, "baseline", baseline, 0)

  info: Dict[str, Any] = {}
  if config.sparsity_structure == config_lib.CHANNELS:
    pruned, info, stats = _prune_channels(plain, train_ds, config, steps, loss,
                                          eval_ds)
  else:
    begin, end, freq = (None, None, None) if m_by_n else config.schedule_steps(
        steps)
    pruned = prune_to(
        plain, train_ds, target_sparsity=config.target_sparsity, steps=steps,
        loss=loss, layers=layers, initial_sparsity=config.initial_sparsity,
        schedule=config.schedule, begin_step=begin or 0, end_step=end,
        frequency=freq, m_by_n=m_by_n, learning_rate=config.learning_rate,
        seed=config.seed, log_dir=log_dir,
        steps_per_epoch=config.steps_per_epoch(train_examples))
    stats = pruning_stats(pruned, layers)
    _check_result(pruned, layers, stats, config)
  stats["baseline_gzip_weight_bytes"] = baseline_gzip
  with deterministic(config.seed):
    metrics = evaluate(pruned, eval_ds, loss) if eval_ds else {}
  _log_eval(log_dir, "pruned", metrics, steps)
  logging.info("Pruned %s: sparsity %.4f, gzip weights %d -> %d bytes, eval "
               "%s -> %s.", config.sparsity_structure, stats["sparsity"],
               baseline_gzip, stats["gzip_weight_bytes"], baseline, metrics)
  return PruneResult(
      model=pruned, structure=config.sparsity_structure,
      pruned_layers=list(info.get("channels_kept", {}) or layers), stats=stats,
      metrics=metrics, baseline_metrics=baseline, info=info,
      target_sparsity=config.effective_target_sparsity)


def _check_result(pruned, layers, stats, config) -> None:
  m_by_n = config.m_by_n
  if m_by_n:
    bad = {name: m_by_n_violations(k, m_by_n)
           for name, k in pruned_kernels(pruned, layers).items()}
    bad = {k: v for k, v in bad.items() if v}
    if bad:
      raise PruningError(f"{config.sparsity_structure} blocks not met after "
                         f"pruning (blocks short of zeros per kernel: {bad}).")
    return
  gap = abs(stats["sparsity"] - config.target_sparsity)
  if gap > 0.01:
    logging.warning("Achieved sparsity %.4f is %.4f from target_sparsity %.4f "
                    "(small layers round to whole weights).", stats["sparsity"],
                    gap, config.target_sparsity)


def _prune_channels(plain, train_ds, config, steps, loss, eval_ds):
  """Structured channel pruning (components/pruner/channels.py)."""
  from tfx_compression.components.pruner import channels  # pylint: disable=g-import-not-at-top
  begin, end, freq = config.schedule_steps(steps)
  result = channels.prune_channels(
      plain, train_ds, target_sparsity=config.target_sparsity,
      ranking=config.channel_ranking, norm=config.channel_norm,
      layer_filter=layer_filter(config.include_layers, config.exclude_layers),
      # Names listed without wildcards must be pruned (or fail, saying why).
      explicit_layers=[p for p in config.include_layers
                       if not any(c in p for c in "*?[")],
      train_steps=steps, finetune_steps=config.finetune_steps,
      begin_step=begin, end_step=end, frequency=freq,
      learning_rate=config.learning_rate, loss=loss, seed=config.seed,
      eval_ds=eval_ds)
  info = dict(result.info)
  whole = model_stats.sparsity_stats(result.model)
  before = info.get("params_before")
  after = info.get("params_after")
  stats = {
      # Channels are removed, not zeroed: the sparsity is the share of the
      # pruned layers' channels removed (what target_sparsity asks for);
      # param_reduction is the share of all parameters gone.
      "sparsity": float(info.get("channel_sparsity", 0.0)),
      "param_reduction": 1.0 - after / before if before else 0.0,
      "param_count": whole["param_count"],
      "zero_count": whole["zero_count"],
      "gzip_weight_bytes": model_stats.weights_gzip_bytes(
          result.model.get_weights()),
  }
  return result.model, info, stats


# Export.


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


def export_pruned(result, original, path: str,
                  sample_serialized_examples: Optional[Sequence[bytes]] = None,
                  label_key: Optional[str] = None) -> None:
  """Saves the pruned model at ``path`` with the input's serving signatures.

  The input's signatures (e.g. serving_default taking serialized tf.Examples)
  are concrete functions reading ``original``'s variables, so the pruned
  weights are written into ``original``, which is saved with its signatures
  and then given its own weights back. The SavedModel has plain Keras layers
  only: it loads without tfmot.

  For 'channels' the narrower model is saved by ``channels.export_narrow_model``
  with the signatures regenerated.

  Args:
    result: a :class:`PruneResult` (or a pruned tf_keras model).
    original: the input model as loaded from its SavedModel (it carries
      ``.signatures``).
    path: a local directory to write.
    sample_serialized_examples: a few serialized tf.Examples ('channels' uses
      them to check the regenerated signatures).
    label_key: the label feature ('channels': left out of regenerated
      signatures' parsing).

  Example:

      export_pruned(result, model_io.load_keras_model(src), "/tmp/out")
  """
  structure = getattr(result, "structure", None)
  pruned = getattr(result, "model", result)
  if structure == config_lib.CHANNELS:
    from tfx_compression.components.pruner import channels  # pylint: disable=g-import-not-at-top
    channels.export_narrow_model(pruned, original, path,
                                 sample_serialized_examples,
                                 label_key=label_key)
    return
  saved = original.get_weights()
  try:
    _copy_weights(pruned, original)
    signatures = model_io.serving_signatures(original) or None
    original.save(path, save_format="tf", signatures=signatures,
                  include_optimizer=False)
  finally:
    original.set_weights(saved)
