"""Masks of the Keras 3 magnitude backend: tfmot's schedules and masks, and the callbacks.

tfmot's ``prune_low_magnitude`` keeps a mask beside each pruned kernel and a
``pruning_step`` counter; here the masks are ``keras.Variable``s held outside
the model, and :class:`Masking` is the callback that counts the steps, updates
the masks when :class:`Schedule` says and multiplies the kernels before each
forward pass. Numbers and masks are computed as tfmot computes them.

Example:

    sched = make_schedule(0.8, schedule="polynomial", begin_step=0,
                          end_step=100, frequency=10)
    masking = Masking(keras3_layers.layer_variables(model, layers), sched)
    model.fit(ds, callbacks=[masking, StopOnNonFiniteLoss(1e-3, masking)])
"""

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import keras
import numpy as np

from tfx_compression.components.pruner import schedules
from tfx_compression.components.pruner import training_common


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


class Masking(keras.callbacks.Callback):
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


class MaskSummaries(keras.callbacks.Callback):
  """TensorBoard scalars of each mask's sparsity at epoch ends (TF backend)."""

  def __init__(self, masking: Masking, log_dir: str):
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


class StopOnNonFiniteLoss(keras.callbacks.Callback):
  """Like TerminateOnNaN, but raises: a NaN model must never be emitted."""

  def __init__(self, learning_rate: float, masking: Masking):
    super().__init__()
    self._learning_rate = learning_rate
    self._masking = masking

  def on_train_batch_end(self, batch, logs=None):
    loss = (logs or {}).get("loss")
    if loss is None:
      return
    loss = float(np.asarray(loss))
    if not math.isfinite(loss):
      raise training_common.non_finite_loss(loss, self._masking.step,
                                            self._learning_rate)
