"""Magnitude pruning of a Keras 3 model, implemented on Keras 3 (no tfmot).

tensorflow-model-optimization only wraps tf_keras (Keras 2) models and will not
support Keras 3. This module does what its ``prune_low_magnitude`` does, with
the same schedule semantics, on a plain Keras 3 model:

1. clone the model (the caller's model is never touched);
2. keep one 0/1 mask per pruned kernel, as a non-trainable ``keras.Variable``
   held *outside* the model;
3. fine-tune with a callback that, before every optimizer step, counts the step
   as tfmot's ``pruning_step`` does (1 in the first step), recomputes the masks
   on the steps tfmot's schedule says ((step - begin) % frequency == 0 within
   [begin, end]; M:N only at step 1), and multiplies the kernels by their masks
   before the forward pass; the masks are applied again at each epoch end;
4. return the model: no wrapper layer, no extra variable, zeros baked in, so
   ``model.save('m.keras')`` and ``keras.saving.load_model`` need nothing else.

Public API (keyword names parallel to ``pruning.py``, the tf_keras/tfmot path):

    prune_model(model, train_ds, config, *, eval_ds=None, log_dir=None,
                loss=None, custom_objects=None, train_examples=None) -> PruneResult
                  (``pruning.prune_model``, which dispatches here by model type)
    prune_to(model, train_ds, *, target_sparsity, steps, loss, layers=None,
             initial_sparsity=0.0, schedule="polynomial", begin_step=0,
             end_step=None, frequency=None, m_by_n=None, learning_rate=1e-3,
             seed=0, log_dir=None, steps_per_epoch=None, callbacks=()) -> model
    ContinuedPruning(model, layers, *, loss, schedule="polynomial",
                     learning_rate=1e-3, seed=0).stage(train_ds,
                     initial_sparsity, target_sparsity, steps, seed=None)
    make_schedule(target_sparsity, initial_sparsity, schedule, begin_step,
                  end_step, frequency) -> Schedule (steps from 0, as pruning.py)
    Schedule(...)(step) -> (should_prune, sparsity): tfmot's PolynomialDecay /
                  ConstantSparsity, steps as tfmot counts them (1 = first step)
    magnitude_mask(weights, sparsity), m_by_n_mask(weights, m_by_n): numpy masks
                  computed as tfmot computes them
    select_layers(model, include, exclude, m_by_n), prunable_layers(model,
                  m_by_n), check_supported(model), clone_model(model)
    resolve_loss(model, custom_objects), evaluate(model, ds, loss),
    deterministic(seed), check_finite(model, learning_rate)
    pruned_kernels(model, layers), pruning_stats(model, layers),
                  m_by_n_violations(kernel, m_by_n)
    PruneResult, PruningError, NonFiniteLossError, UnsupportedModelError
                  (``strategy``'s, shared with the tf_keras backend)

This module imports neither tfmot nor tf_keras: pruning a Keras 3 model never
sets ``TF_USE_LEGACY_KERAS``.

Example:

    config = PrunerConfig(label_key="label", target_sparsity=0.8, train_steps=300)
    result = prune_model(model, train_ds, config, eval_ds=eval_ds)
    result.model.save("/tmp/pruned.keras")
"""

import contextlib
import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging
import keras
import numpy as np

from tfx_compression.components.common import model_stats
from tfx_compression.components.common import progress
from tfx_compression.components.pruner import config as config_lib
from tfx_compression.components.pruner import distillation
from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import strategy
# The result and errors every backend shares; one M:N check for all.
from tfx_compression.components.pruner.m_by_n import m_by_n_violations  # noqa: F401
from tfx_compression.components.pruner.strategy import NonFiniteLossError
from tfx_compression.components.pruner.strategy import PruneResult  # noqa: F401
from tfx_compression.components.pruner.strategy import PruningError  # noqa: F401
from tfx_compression.components.pruner.strategy import UnsupportedModelError


# Which layers can be pruned: the weights tfmot's PruneRegistry names.

_L = keras.layers
_KERNEL = ("kernel",)
_REGISTRY = {
    _L.Dense: _KERNEL, _L.Conv1D: _KERNEL, _L.Conv2D: _KERNEL,
    _L.Conv3D: _KERNEL, _L.Conv2DTranspose: _KERNEL,
    _L.Conv3DTranspose: _KERNEL, _L.SeparableConv1D: ("pointwise_kernel",),
    _L.SeparableConv2D: ("pointwise_kernel",), _L.Embedding: ("embeddings",),
}
_RNN = (_L.SimpleRNN, _L.LSTM, _L.GRU)
_MHA_DENSE = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def _walk_layers(model):
  """Layers of a model, descending into nested models."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _walk_layers(layer)
    else:
      yield layer


def _prunable_weights(layer) -> list:
  """The weights tfmot would prune in ``layer`` ([] if none)."""
  if hasattr(layer, "get_prunable_weights"):
    return list(layer.get_prunable_weights())
  if type(layer) in _REGISTRY:
    return [getattr(layer, n) for n in _REGISTRY[type(layer)]
            if getattr(layer, n, None) is not None]
  if type(layer) in _RNN:
    cell = layer.cell
    return [cell.kernel, cell.recurrent_kernel]
  if type(layer) is _L.MultiHeadAttention:
    return [getattr(layer, n).kernel for n in _MHA_DENSE
            if getattr(layer, n, None) is not None]
  return []


def _m_by_n_ok(weight, m_by_n: Tuple[int, int]) -> bool:
  # Blocks run along the input dimension (axis -2 of a Dense or Conv kernel);
  # tfmot rearranges rank-2 and rank-4 kernels only.
  return len(weight.shape) in (2, 4) and weight.shape[-2] % m_by_n[1] == 0


def prunable_layers(model, m_by_n: Optional[Tuple[int, int]] = None
                   ) -> Dict[str, Any]:
  """Name -> layer for every layer with weights to prune (M:N blocks if given).

  The layers tfmot's registry supports (Dense, Conv, SeparableConv's pointwise
  kernel, Embedding, SimpleRNN/LSTM/GRU, MultiHeadAttention), or any layer with
  a ``get_prunable_weights()`` method.

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


def select_layers(model, include: Sequence[str] = (),
                  exclude: Sequence[str] = (),
                  m_by_n: Optional[Tuple[int, int]] = None) -> List[str]:
  """Names of the layers to prune, from fnmatch patterns on layer names.

  Same rules and messages as ``pruning.select_layers``.

  Raises:
    ValueError: a pattern matches no prunable layer, or nothing is left.

  Example:

      select_layers(model, include=["conv*", "dense1"])  # ['conv1', 'conv2', 'dense1']
  """
  check_supported(model)
  names = list(prunable_layers(model, m_by_n))
  others = ([n for n in prunable_layers(model) if n not in names]
            if m_by_n else [])
  return strategy.match_layers(names, include, exclude, m_by_n, others)


def _is_graph_model(model) -> bool:
  from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top
  return isinstance(model, (keras.Sequential, Functional))


def check_supported(model) -> None:
  """Raises UnsupportedModelError unless ``model`` is a Keras 3 graph model.

  Masks need no wrapping, but :func:`clone_model` must rebuild the model, which
  Keras does for Sequential and functional models only.
  """
  if not isinstance(model, keras.Model):
    raise UnsupportedModelError(
        f"The model is a {type(model).__name__} ({type(model).__module__}), "
        "not a Keras 3 Model; this pruning backend needs a Keras 3 functional "
        "or Sequential model (tf_keras models go through pruning.prune_model).")
  if _is_graph_model(model):
    return
  layers = [f"{l.name} ({type(l).__name__})" for l in model.layers]
  can = [l.name for l in model.layers if _prunable_weights(l)]
  raise UnsupportedModelError(
      f"The model is a subclassed Keras model ({type(model).__name__}), which "
      "the Pruner cannot clone: only Sequential and functional models can be "
      f"rebuilt. Its layers: {layers or 'none tracked'}; of these prunable: "
      f"{can or 'none'}. Build the model with the functional API "
      "(keras.Model(inputs, outputs)) or keras.Sequential in the Trainer "
      "module.")


def clone_model(model):
  """A copy with the same weights (new layer objects and variables)."""
  check_supported(model)
  clone = keras.models.clone_model(model)
  clone.set_weights(model.get_weights())
  return clone


# Loss and evaluation.


def _deserialize_loss(cfg, custom_objects):
  if cfg is None:
    return None
  if isinstance(cfg, str):
    return keras.losses.get(cfg)
  if isinstance(cfg, dict) and "class_name" in cfg:
    return keras.losses.deserialize(cfg, custom_objects=custom_objects)
  if isinstance(cfg, dict):
    return {k: _deserialize_loss(v, custom_objects) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [_deserialize_loss(v, custom_objects) for v in cfg]
  return cfg if isinstance(cfg, keras.losses.Loss) or callable(cfg) else None


def resolve_loss(model, custom_objects: Optional[Dict[str, Any]] = None
                ) -> Tuple[Any, str]:
  """The loss to fine-tune with, and where it came from.

  In order: the model's compiled loss; the loss in its compile config (a
  ``.keras`` file loaded with ``compile=False`` keeps it when present); else a
  cross-entropy matching the output, as ``pruning.resolve_loss`` chooses it.

  Example:

      loss, source = resolve_loss(model)  # (SparseCategoricalCrossentropy, 'compiled model')
  """
  if getattr(model, "loss", None) is not None and getattr(
      model, "optimizer", None) is not None:
    return model.loss, "compiled model"
  compile_config = getattr(model, "_compile_config", None)
  saved = getattr(compile_config, "config", compile_config) or {}
  if isinstance(saved, dict) and saved.get("loss") is not None:
    try:
      loss = _deserialize_loss(saved["loss"], custom_objects)
      if loss is not None:
        return loss, "training config"
    except (ValueError, TypeError) as e:
      logging.warning("The saved loss could not be rebuilt (%s); using the "
                      "default cross-entropy. Declare custom losses in the "
                      "module_file's custom_objects.", e)
  return strategy.default_loss(model, keras.losses, "model file")


def _accuracy_metric(model, loss):
  name = (loss if isinstance(loss, str) else type(loss).__name__).lower()
  from_logits = bool(getattr(loss, "get_config", lambda: {})().get(
      "from_logits", False))
  if "binary" in name or (len(model.outputs) == 1
                          and model.outputs[0].shape[-1] == 1):
    return keras.metrics.BinaryAccuracy(
        name="accuracy", threshold=0.0 if from_logits else 0.5)
  if name.startswith("categorical"):
    return keras.metrics.CategoricalAccuracy(name="accuracy")
  return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def evaluate(model, dataset, loss) -> Dict[str, float]:
  """{'loss': ..., 'accuracy': ...} of ``model`` on a finite dataset.

  Compiles ``model``: pass a model you own (a clone), not the caller's.
  """
  model.compile(loss=loss, metrics=[_accuracy_metric(model, loss)])
  values = model.evaluate(dataset, verbose=0, return_dict=True)
  return {k: float(v) for k, v in values.items()}


@contextlib.contextmanager
def deterministic(seed: int):
  """Seeds Python, NumPy, TensorFlow and Keras 3; TF ops deterministic.

  Op determinism is global to the process; it is restored on exit.
  """
  keras.utils.set_random_seed(seed)
  if keras.backend.backend() != "tensorflow":
    yield
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was_enabled = tf_config.is_op_determinism_enabled()
  tf.config.experimental.enable_op_determinism()
  try:
    yield
  finally:
    if not was_enabled:
      tf_config.disable_op_determinism()


# Schedules: tfmot's, with steps counted as tfmot counts them.


@dataclasses.dataclass
class Schedule:
  """tfmot's PolynomialDecay (or ConstantSparsity), as plain mutable numbers.

  ``schedule(step)`` is ``(should_prune, sparsity)`` for tfmot's step counter
  (1 during the first optimizer step): the mask is updated when
  ``begin_step <= step <= end_step`` (or ``end_step`` is -1, constant only) and
  ``(step - begin_step) % frequency == 0``; the sparsity is tfmot's float32
  polynomial ``final + (initial - final) * (1 - p) ** power`` with ``p`` the
  clipped progress (constant: ``final``). Being plain Python, a continued run
  moves the stage with :meth:`set_stage` without retracing anything.

  Example:

      Schedule("polynomial", 0.0, 0.8, begin_step=1, end_step=101, frequency=10)(11)
      # (True, 0.21...)
  """
  kind: str = "polynomial"
  initial_sparsity: float = 0.0
  final_sparsity: float = 0.0
  begin_step: int = 1
  end_step: int = 2
  frequency: int = 1
  power: int = schedules.POWER

  def __post_init__(self):
    if self.kind not in schedules.SCHEDULES:
      raise ValueError(f"`schedule`={self.kind!r} is not one of "
                       f"{schedules.SCHEDULES}.")

  def set_stage(self, initial_sparsity: float, target_sparsity: float,
                begin_step: int, end_step: int) -> None:
    """Steps as tfmot counts them (1 = the first optimizer step)."""
    self.initial_sparsity = float(initial_sparsity)
    self.final_sparsity = float(target_sparsity)
    self.begin_step = int(begin_step)
    self.end_step = max(int(end_step), int(begin_step) + 1)

  def should_prune(self, step: int) -> bool:
    in_range = step >= self.begin_step and (step <= self.end_step
                                            or self.end_step < 0)
    return in_range and (step - self.begin_step) % self.frequency == 0

  def sparsity(self, step: int) -> float:
    """The float32 sparsity tfmot computes at ``step``."""
    if self.kind == "constant":
      return float(np.float32(self.final_sparsity))
    # keras.ops are the TensorFlow ops tfmot uses on this backend: same bits.
    ops = keras.ops
    p = ops.minimum(1.0, ops.maximum(0.0, ops.divide(
        ops.cast(step - self.begin_step, "float32"),
        ops.cast(self.end_step - self.begin_step, "float32"))))
    value = ops.add(ops.multiply(
        ops.cast(self.initial_sparsity - self.final_sparsity, "float32"),
        ops.power(ops.subtract(1.0, p), ops.cast(self.power, "float32"))),
                    ops.cast(self.final_sparsity, "float32"))
    return float(np.float32(keras.ops.convert_to_numpy(value)))

  def __call__(self, step: int) -> Tuple[bool, float]:
    return self.should_prune(step), self.sparsity(step)


def make_schedule(target_sparsity: float, initial_sparsity: float = 0.0,
                  schedule: str = "polynomial", begin_step: int = 0,
                  end_step: int = 1, frequency: int = 1) -> Schedule:
  """The schedule for steps counted from 0 (as ``pruning.make_schedule``).

  tfmot's step counter is 1 during the first optimizer step, so the steps are
  shifted by one: begin_step=0 updates the mask in the very first step.
  """
  if schedule not in schedules.SCHEDULES:
    raise ValueError(f"`schedule`={schedule!r} is not one of "
                     f"{schedules.SCHEDULES}.")
  return Schedule(schedule, float(initial_sparsity), float(target_sparsity),
                  begin_step + 1, end_step + 1, int(frequency))


# Masks, computed as tfmot computes them.


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
  """tfmot's magnitude mask: keeps the k = max(round(size * (1 - s)), 1) largest.

  Every weight whose magnitude reaches the k-th largest is kept (ties kept).
  """
  magnitude = np.abs(weights)
  size = magnitude.size
  keep = np.float32(size) * (np.float32(1.0) - np.float32(sparsity))
  k = int(max(np.round(keep), 1))
  threshold = np.partition(magnitude.ravel(), size - k)[size - k]
  return (magnitude >= threshold).astype(weights.dtype)


def _rows_along_input(weights: np.ndarray) -> np.ndarray:
  # tfmot's weights_rearrange: Dense [in, out] -> [out, in]; Conv [h, w, in,
  # out] -> [out * h * w, in]: blocks run along the input channels.
  if weights.ndim == 2:
    return weights.T
  if weights.ndim == 4:
    return np.transpose(weights, (3, 0, 1, 2)).reshape(-1, weights.shape[2])
  raise ValueError(f"M:N masks need a rank-2 or rank-4 kernel, got shape "
                   f"{weights.shape}.")


def m_by_n_mask(weights: np.ndarray, m_by_n: Tuple[int, int]) -> np.ndarray:
  """tfmot's M:N mask: in every block of N input weights the N - M largest stay.

  Ties go to the lower index (as ``tf.math.top_k``).
  """
  m, n = m_by_n
  rows = np.abs(_rows_along_input(weights))
  pad = n - rows.shape[1] % n  # tfmot pads a whole block when it divides.
  blocks = np.pad(rows, [(0, 0), (0, pad)]).reshape(-1, n)
  top = np.argsort(-blocks, axis=1, kind="stable")[:, :n - m]
  mask = np.zeros_like(blocks)
  np.put_along_axis(mask, top, 1.0, axis=1)
  mask = mask.reshape(rows.shape[0], -1)[:, :rows.shape[1]]
  if weights.ndim == 2:
    return mask.T.astype(weights.dtype)
  h, w, c_in, c_out = weights.shape
  return np.transpose(mask.reshape(c_out, h, w, c_in),
                      (1, 2, 3, 0)).astype(weights.dtype)


# Fine-tuning with masks.


class _Masking(keras.callbacks.Callback):
  """Keeps the pruned kernels masked during ``fit``, as tfmot's wrapper does.

  ``step`` is tfmot's ``pruning_step``: counted at the start of each training
  batch (1 in the first), before the masks are updated and applied, so the
  forward pass always sees masked kernels.
  """

  def __init__(self, variables: Sequence[Any], schedule: Schedule,
               m_by_n: Optional[Tuple[int, int]] = None):
    super().__init__()
    self.variables = list(variables)
    self.schedule = schedule
    self.m_by_n = m_by_n
    self.step = 0
    self.masks = [keras.Variable(np.ones(v.shape, "float32"), trainable=False,
                                 dtype=v.dtype, name="mask")
                  for v in self.variables]
    self._masked = False  # All-ones masks need no multiply.
    self._apply = self._apply_masks
    if keras.backend.backend() == "tensorflow":
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._apply = tf.function(self._apply_masks)

  def _apply_masks(self):
    for var, mask in zip(self.variables, self.masks):
      var.assign(keras.ops.multiply(var, mask))

  def apply(self) -> None:
    if self._masked:
      self._apply()

  def update(self) -> None:
    """Recomputes every mask from the current weights (at ``self.step``)."""
    sparsity = None if self.m_by_n else self.schedule.sparsity(self.step)
    for var, mask in zip(self.variables, self.masks):
      w = keras.ops.convert_to_numpy(var)
      mask.assign(m_by_n_mask(w, self.m_by_n) if self.m_by_n
                  else magnitude_mask(w, sparsity))
    self._masked = True

  def on_train_batch_begin(self, batch, logs=None):
    self.step += 1
    if self.m_by_n:
      due = self.step == 1  # tfmot sets an M:N mask once, at step 1.
    else:
      due = self.schedule.should_prune(self.step)
    if due:
      self.update()
    self.apply()

  def on_epoch_end(self, epoch, logs=None):
    # As tfmot's UpdatePruningStep: the last update leaves exact zeros.
    self.apply()

  def mask_sparsity(self) -> Dict[str, float]:
    return {v.path: 1.0 - float(np.mean(keras.ops.convert_to_numpy(m)))
            for v, m in zip(self.variables, self.masks)}


class _MaskSummaries(keras.callbacks.Callback):
  """TensorBoard scalars of each mask's sparsity at epoch ends (TF backend)."""

  def __init__(self, masking: _Masking, log_dir: str):
    super().__init__()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    self._masking = masking
    self._writer = tf.summary.create_file_writer(f"{log_dir}/metrics")

  def on_epoch_end(self, epoch, logs=None):
    with self._writer.as_default():
      step = self._masking.step
      self._tf.summary.scalar("sparsity", self._masking.schedule.sparsity(
          max(step, 1)), step=step)
      for name, value in self._masking.mask_sparsity().items():
        self._tf.summary.scalar(f"{name}/sparsity", value, step=step)
    self._writer.flush()


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Like TerminateOnNaN, but raises: a NaN model must never be emitted."""

  def __init__(self, learning_rate: float, masking: _Masking):
    super().__init__()
    self._learning_rate = learning_rate
    self._masking = masking

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None:
      return
    loss = float(np.asarray(loss))
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f"The fine-tuning loss became {loss} at step {self._masking.step}; "
          "fine-tuning stopped and no model was written. Lower "
          f"`learning_rate` (now {self._learning_rate:g}), check the train "
          "split for NaN or infinite feature values, or check the model's "
          "loss.")


def _layer_variables(model, layers: Sequence[str]) -> list:
  by_name = {l.name: l for l in _walk_layers(model)}
  missing = [n for n in layers if n not in by_name]
  if missing:
    raise ValueError(f"`layers` {missing} are not layers of model "
                     f"'{model.name}' (its layers: {sorted(by_name)}).")
  return [w for n in layers for w in _prunable_weights(by_name[n])]


def _fit(model, train_ds, steps: int, epoch: int, masking: _Masking,
         learning_rate: float, log_dir: Optional[str], callbacks=()) -> None:
  cbs = [masking, _StopOnNonFiniteLoss(learning_rate, masking)]
  if log_dir:
    cbs.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    cbs.append(_MaskSummaries(masking, log_dir))
  cbs.extend(callbacks)
  cbs.append(progress.keras_callback(
      progress.Progress("fine-tuning", max(1, steps)), keras))
  model.fit(train_ds.repeat(), steps_per_epoch=epoch, epochs=steps // epoch,
            callbacks=cbs, verbose=0)


def prune_to(model, train_ds, *, target_sparsity: float, steps: int, loss,
             layers: Optional[Sequence[str]] = None,
             initial_sparsity: float = 0.0, schedule: str = "polynomial",
             begin_step: int = 0, end_step: Optional[int] = None,
             frequency: Optional[int] = None,
             m_by_n: Optional[Tuple[int, int]] = None,
             learning_rate: float = 1e-3, seed: int = 0,
             log_dir: Optional[str] = None,
             steps_per_epoch: Optional[int] = None,
             callbacks: Sequence[Any] = ()):
  """Prunes a copy of ``model`` from its current weights; returns it.

  One pruning stage, as ``pruning.prune_to`` (same arguments, same meaning):
  the schedule ramps from ``initial_sparsity`` to ``target_sparsity``; with
  ``m_by_n`` the M:N mask is set at the first step and kept.

  Returns:
    A new plain Keras 3 model with sparse kernels (and a fresh Adam state).

  Raises:
    NonFiniteLossError: the loss, or a weight, became NaN or infinite.
    UnsupportedModelError: not a Keras 3 functional or Sequential model.

  Example:

      half = prune_to(model, ds, target_sparsity=0.5, steps=200, loss=loss)
      more = prune_to(half, ds, initial_sparsity=0.5, target_sparsity=0.7,
                      steps=200, loss=loss)
  """
  check_supported(model)
  with deterministic(seed):
    plain = clone_model(model)
    if layers is None:
      layers = select_layers(plain, m_by_n=m_by_n)
    if m_by_n:
      sched = make_schedule(m_by_n[0] / m_by_n[1], schedule="constant",
                            begin_step=0, end_step=0, frequency=1)
    else:
      begin, end, freq = schedules.resolve_schedule(steps, begin_step,
                                                     end_step, frequency)
      sched = make_schedule(target_sparsity, initial_sparsity, schedule, begin,
                            end, freq)
      logging.info("Pruning %s to %.3f: %s schedule, mask updates at steps "
                   "%d..%d every %d, %d steps in all.", list(layers),
                   target_sparsity, schedule, begin, end, freq, steps)
    masking = _Masking(_layer_variables(plain, layers), sched, m_by_n)
    plain.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss,
                  metrics=distillation.train_metrics(loss))
    # Several epochs only serve the TensorBoard logs.
    epoch = steps_per_epoch or (
        schedules.epoch_length(steps) if log_dir else steps)
    if steps % epoch:
      raise ValueError(f"steps_per_epoch={epoch} does not divide steps={steps}.")
    _fit(plain, train_ds, steps, epoch, masking, learning_rate, log_dir,
         callbacks)
  check_finite(plain, learning_rate)
  # Drop the fine-tuning's Adam state (``model.save`` would write its slots)
  # but keep the loss, so a saved result can be pruned again.
  plain.compile(loss=loss)
  return plain


class ContinuedPruning:
  """One compiled model pruned further stage after stage (for the search).

  Each stage moves the schedule from the last stage's sparsity to the next
  target and fine-tunes from the current weights, on the same compiled model:
  no clone, no recompile, no retrace. The Adam state and the masks carry over,
  as in one longer training run (``pruning.ContinuedPruning``'s semantics).

  ``model`` always holds the current weights, zeros included; copy it
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
    self.learning_rate = learning_rate
    self.seed = seed
    self.steps_done = 0
    self._layers = list(layers)
    self._schedule = Schedule(schedule)
    self._masking = None
    with deterministic(seed):
      self.model = clone_model(model)
    self._loss = loss

  def _build(self, frequency: int) -> None:
    self._schedule.frequency = frequency
    self._masking = _Masking(_layer_variables(self.model, self._layers),
                             self._schedule)
    with deterministic(self.seed):
      self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                         loss=self._loss)

  def stage(self, train_ds, initial_sparsity: float, target_sparsity: float,
            steps: int, seed: Optional[int] = None):
    """Ramps from ``initial_sparsity`` to ``target_sparsity`` over ``steps``.

    Returns:
      The model (the shared one) after the stage.
    """
    begin, end, freq = schedules.resolve_schedule(steps, 0, None, None)
    if self._masking is None:
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
      _fit(self.model, train_ds, steps, steps, self._masking,
           self.learning_rate, None)
    self.steps_done += steps
    check_finite(self.model, self.learning_rate)
    return self.model


def check_finite(model, learning_rate: Optional[float] = None) -> None:
  """Raises NonFiniteLossError if a weight is NaN or infinite."""
  bad = [w.path for w in model.weights
         if not np.isfinite(keras.ops.convert_to_numpy(w)).all()]
  if bad:
    lr = f" (now {learning_rate:g})" if learning_rate else ""
    raise NonFiniteLossError(
        f"Fine-tuning left NaN or infinite weights in {bad}; no model was "
        f"written. Lower `learning_rate`{lr}, check the train split for NaN or "
        "infinite feature values, or check the model's loss.")


# Measuring.


def pruned_kernels(model, layers: Sequence[str]) -> Dict[str, np.ndarray]:
  """'layer/weight' -> array of the pruned weights of ``layers``."""
  by_name = {l.name: l for l in _walk_layers(model)}
  out = {}
  for name in layers:
    for w in _prunable_weights(by_name[name]):
      short = w.path[len(name) + 1:] if w.path.startswith(name + "/") else w.name
      out[f"{name}/{short}"] = keras.ops.convert_to_numpy(w)
  return out


def pruning_stats(model, layers: Sequence[str]) -> Dict[str, Any]:
  """Achieved sparsity over the pruned kernels, and the model's sizes.

  Returns:
    sparsity, pruned_param_count, pruned_zero_count, param_count, zero_count,
    gzip_weight_bytes (as ``pruning.pruning_stats``).
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


# The whole job.


def prune_model(model, train_ds, config: config_lib.PrunerConfig, *,
                eval_ds=None, log_dir: Optional[str] = None, loss=None,
                custom_objects: Optional[Dict[str, Any]] = None,
                train_examples: Optional[int] = None) -> PruneResult:
  """Prunes a copy of the Keras 3 ``model`` as ``config`` says and measures it.

  ``pruning.prune_model`` itself (it sends a Keras 3 model to this backend, and
  'channels' to ``keras3_channels``): the same arguments, result and errors
  for either Keras.

  Example:

      result = prune_model(model, train_ds, PrunerConfig(target_sparsity=0.8),
                           eval_ds=eval_ds)
      result.stats["sparsity"]  # ~0.8
  """
  check_supported(model)
  from tfx_compression.components.pruner import pruning  # pylint: disable=g-import-not-at-top
  return pruning.prune_model(model, train_ds, config, eval_ds=eval_ds,
                             log_dir=log_dir, loss=loss,
                             custom_objects=custom_objects,
                             train_examples=train_examples)
