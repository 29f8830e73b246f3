"""Pruning schedules: when masks are updated and to what sparsity, for every backend.

Steps count from 0 here (a mask update "at step s" happens in the (s+1)-th
optimizer step). One definition serves the Pruner's config (the automatic
``end_step``/``frequency`` and their checks), tfmot's schedules (Keras 2), the
staged schedule of the search, and the channel-masking ramp.

Example:

    begin, end, frequency = resolve_schedule(300)          # (0, 210, 10)
    schedule_steps(20, begin_step=2, end_step=12, frequency=4)
    # {2: 0.0, 6: 0.784, 10: 0.992, 12: 1.0}
"""

import math
from typing import Dict, Optional, Tuple

import tensorflow as tf

SCHEDULES = ("polynomial", "constant")
DEFAULT_TRAIN_STEPS = 300
# The share of the fine-tuning during which the sparsity ramps up when end_step
# is not given; the remaining steps recover accuracy at the target sparsity.
RAMP_FRACTION = 0.7
# Mask updates over the ramp when frequency is not given.
MASK_UPDATES = 20
# tfmot's PolynomialDecay exponent, used by every polynomial ramp here.
POWER = 3


def resolve_schedule(total_steps: int, begin_step: int = 0,
                     end_step: Optional[int] = None,
                     frequency: Optional[int] = None) -> Tuple[int, int, int]:
  """(begin, end, frequency) with the automatic values filled in and checked.

  Steps count from 0: a mask update "at step s" happens in the (s+1)-th
  optimizer step, so ``end_step`` must be below ``total_steps``.

  Example:

      resolve_schedule(300)  # -> (0, 210, 10)
  """
  if total_steps < begin_step + 2:
    raise ValueError(
        f"The fine-tuning has {total_steps} step(s), too few for `begin_step`="
        f"{begin_step}: pruning needs at least begin_step + 2 steps. Raise "
        "`train_steps` (or `epochs`) or lower `begin_step`.")
  available = total_steps - 1 - begin_step
  if frequency is not None and end_step is None and frequency > available:
    raise ValueError(
        f"`frequency`={frequency} is more than the {available} step(s) "
        f"available after `begin_step`={begin_step} in {total_steps} "
        "fine-tuning steps. Lower `frequency` or raise `train_steps`.")
  if end_step is None:
    span = max(1, int(round(RAMP_FRACTION * (total_steps - begin_step))))
    span = min(span, available)
    if frequency is None:
      frequency = max(1, span // MASK_UPDATES)
    span = max(frequency, span - span % frequency)
    end_step = begin_step + span
  elif frequency is None:
    span = end_step - begin_step
    # The largest divisor of the span giving at least MASK_UPDATES updates,
    # so the last update lands exactly on end_step.
    frequency = max([d for d in range(1, span + 1)
                     if span % d == 0 and span // d >= min(MASK_UPDATES, span)])
  if end_step >= total_steps:
    raise ValueError(
        f"`end_step`={end_step} is not below the {total_steps} fine-tuning "
        "steps, so the target sparsity would never be reached. Lower "
        "`end_step` (or leave it unset), or raise `train_steps`/`epochs`.")
  return begin_step, end_step, frequency


def schedule_steps(train_steps: int, begin_step: int = 0,
                   end_step: Optional[int] = None,
                   frequency: Optional[int] = None) -> Dict[int, float]:
  """Training step -> fraction of the final removal reached at that step.

  Polynomial ramp (power 3, as tfmot's PolynomialDecay) from ``begin_step`` to
  ``end_step`` (default: ``train_steps``), updated every ``frequency`` steps
  (default: a tenth of the ramp) and at ``end_step``. Steps at or after
  ``train_steps`` are not listed: the final removal happens after training.
  Channel pruning masks channels on this ramp.
  """
  end = train_steps if end_step is None else end_step
  if end < begin_step:
    raise ValueError(f"`end_step` ({end}) must be >= `begin_step` "
                     f"({begin_step}).")
  span = end - begin_step
  freq = frequency or max(1, span // 10)
  steps = list(range(begin_step, end + 1, freq)) + [end]
  out = {}
  for t in steps:
    if t >= train_steps:
      continue
    frac = 1.0 if span == 0 else min(1.0, (t - begin_step) / span)
    out[t] = 1.0 - (1.0 - frac) ** POWER
  return dict(sorted(out.items()))


def epoch_length(steps: int) -> int:
  """Steps per Keras epoch: a divisor of ``steps`` near a tenth of it.

  tfmot's PruningSummaries logs at epoch starts, so a run of several epochs
  shows the sparsity ramp in TensorBoard; epochs must tile the steps exactly.
  """
  divisors = [d for d in range(1, steps + 1) if steps % d == 0]
  return min(divisors, key=lambda d: abs(math.log(d * 10 / steps)))


def _check_name(schedule: str) -> None:
  if schedule not in SCHEDULES:
    raise ValueError(f"`schedule`={schedule!r} is not one of {SCHEDULES}.")


def make_schedule(target_sparsity: float, initial_sparsity: float = 0.0,
                  schedule: str = "polynomial", begin_step: int = 0,
                  end_step: int = 1, frequency: int = 1):
  """The tfmot schedule (Keras 2 backend) for steps counted from 0.

  tfmot's step counter is 1 during the first optimizer step, so the steps are
  shifted by one: begin_step=0 updates the mask in the very first step, and
  the target is applied in step end_step + 1 (of 1..total).
  """
  _check_name(schedule)
  # Imported here, never at module level: importing tfmot sets
  # TF_USE_LEGACY_KERAS=1, which must not happen when a Keras 3 model is pruned.
  # pylint: disable-next=g-import-not-at-top
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule
  if schedule == "constant":
    return pruning_schedule.ConstantSparsity(target_sparsity, begin_step + 1,
                                             end_step + 1, frequency)
  return pruning_schedule.PolynomialDecay(initial_sparsity, target_sparsity,
                                          begin_step + 1, end_step + 1,
                                          frequency=frequency)


class StagedSchedule:
  """A polynomial (or constant) tfmot-style schedule whose targets can be moved.

  tfmot's schedules hold Python numbers, baked into the traced training step:
  a new target means a new wrapped model and a new trace. This one keeps its
  begin/end steps and sparsities in variables, so the search can move the
  target stage after stage on one wrapped, compiled model. It follows tfmot's
  ``PruningSchedule`` contract (``__call__(step) -> (update now, sparsity)``,
  steps counted from 1) without needing tfmot.
  """

  def __init__(self, schedule: str = "polynomial", frequency: int = 1,
               power: int = POWER):
    _check_name(schedule)
    self.schedule = schedule
    self.frequency = int(frequency)
    self.power = power
    self.begin_step = tf.Variable(1, dtype=tf.int64, trainable=False)
    self.end_step = tf.Variable(2, dtype=tf.int64, trainable=False)
    self.initial_sparsity = tf.Variable(0.0, dtype=tf.float32, trainable=False)
    self.final_sparsity = tf.Variable(0.0, dtype=tf.float32, trainable=False)

  def set_stage(self, initial_sparsity: float, target_sparsity: float,
                begin_step: int, end_step: int) -> None:
    """Steps as tfmot counts them (1 = the first optimizer step)."""
    self.initial_sparsity.assign(initial_sparsity)
    self.final_sparsity.assign(target_sparsity)
    self.begin_step.assign(begin_step)
    self.end_step.assign(max(end_step, begin_step + 1))

  def __call__(self, step):
    step = tf.cast(step, tf.int64)
    if self.schedule == "constant":
      sparsity = tf.identity(self.final_sparsity)
    else:
      p = tf.clip_by_value(
          tf.cast(step - self.begin_step, tf.float32)
          / tf.cast(self.end_step - self.begin_step, tf.float32), 0.0, 1.0)
      sparsity = ((self.initial_sparsity - self.final_sparsity)
                  * tf.pow(1.0 - p, self.power) + self.final_sparsity)
    # tfmot's PruningSchedule._should_prune_in_step.
    in_range = tf.math.logical_and(
        tf.math.greater_equal(step, self.begin_step),
        tf.math.logical_or(tf.math.less_equal(step, self.end_step),
                           tf.math.less(self.end_step, 0)))
    turn = tf.math.equal(
        tf.math.floormod(tf.math.subtract(step, self.begin_step),
                         self.frequency), 0)
    return tf.math.logical_and(in_range, turn), sparsity

  def get_config(self):
    return {"class_name": type(self).__name__,
            "config": {"schedule": self.schedule, "frequency": self.frequency,
                       "power": self.power}}
