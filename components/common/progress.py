"""Progress of a long step (fine-tuning, the search, the evaluation), for people watching.

    reporter = progress.Progress("fine-tuning", total=300, unit="steps")
    model.fit(ds, steps_per_epoch=300, callbacks=[progress.keras_callback(reporter)])
    # or, in a loop of your own:
    reporter.update(done)

Two audiences, one call:

* the logs (Kubeflow, Vertex AI, the local runner's log file): at most one absl INFO
  line every ``log_every`` seconds, and one when the step is done, such as
  ``Progress: fine-tuning 150/300 steps, 52.1 steps/s, 3 s left``. The format is
  :data:`FORMAT`; :func:`parse_record` reads such a record back.
* a console in the same process (the local runner): every update (at most every
  ``MIN_INTERVAL`` seconds) goes to the functions given to :func:`add_listener`,
  which draw a live line on a terminal. A listener that raises is dropped, never the
  step.

Nothing here imports TensorFlow; :func:`keras_callback` imports the Keras it is asked for.
"""

import dataclasses
import threading
import time
from typing import Any, Callable, List, Optional

from absl import logging

# The log line; its arguments are (task, done, total, unit, rate, unit, left).
FORMAT = "Progress: %s %d/%d %s, %.1f %s/s, %s left"
MIN_INTERVAL = 0.2  # seconds between two calls of the listeners

_listeners: List[Callable[["Update"], None]] = []
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Update:
  """Where a step stands: ``done`` of ``total`` units, the rate and the time left."""
  task: str
  done: int
  total: int
  unit: str
  rate: float  # units per second after the first update, 0.0 until known
  seconds_left: Optional[float]  # None while the rate is unknown

  @property
  def finished(self) -> bool:
    return self.done >= self.total

  def text(self) -> str:
    """``fine-tuning 150/300 steps, 52.1 steps/s, 3 s left`` (what the log shows)."""
    return FORMAT % self._args()

  def _args(self):
    return (self.task, self.done, self.total, self.unit, self.rate, self.unit,
            format_seconds(self.seconds_left))


def format_seconds(seconds: Optional[float]) -> str:
  """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``?`` when unknown."""
  if seconds is None:
    return "?"
  seconds = int(round(max(0.0, seconds)))
  if seconds < 60:
    return f"{seconds} s"
  if seconds < 3600:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def add_listener(listener: Callable[[Update], None]) -> None:
  """Calls ``listener(update)`` on updates of every Progress in this process."""
  with _lock:
    _listeners.append(listener)


def remove_listener(listener: Callable[[Update], None]) -> None:
  with _lock:
    if listener in _listeners:
      _listeners.remove(listener)


def parse_record(record: Any) -> Optional[Update]:
  """The Update a ``logging.LogRecord`` carries, or None for any other record."""
  if getattr(record, "msg", None) != FORMAT or len(record.args or ()) != 7:
    return None
  task, done, total, unit, rate, _, left = record.args
  return Update(task, int(done), int(total), unit, float(rate),
                None if left == "?" else _parse_seconds(left))


def _parse_seconds(text: str) -> Optional[float]:
  parts = text.split()
  units = {"s": 1, "min": 60, "h": 3600}
  try:
    return float(sum(int(parts[i]) * units[parts[i + 1]]
                     for i in range(0, len(parts), 2)))
  except (ValueError, KeyError, IndexError):
    return None


class Progress:
  """Counts units of a long step and reports them to the logs and the listeners.

  Args:
    task: what runs, in a few words ("fine-tuning", "search step 2/5").
    total: the number of units when done (>= 1).
    unit: what is counted ("steps", "examples").
    log_every: seconds between two log lines (the last one is always logged).
    clock: seconds, monotonic (tests pass a fake one).
  """

  def __init__(self, task: str, total: int, unit: str = "steps",
               log_every: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
      raise ValueError(f"`total` must be an integer >= 1 (the units the step "
                       f"will count), got {total!r}.")
    self.task, self.total, self.unit = task, total, unit
    self._log_every = log_every
    self._clock = clock
    self._start = clock()
    self._last_log = self._start
    self._last_notify = None
    self._first = None  # (time, done) of the first update
    self.done = 0

  def update(self, done: int) -> Update:
    """Records that ``done`` units of ``total`` are finished; returns the Update."""
    self.done = min(int(done), self.total)
    now = self._clock()
    # The rate counts from the first update: the first unit also pays for
    # tracing and compiling, which would make the time left absurd.
    if self._first is None:
      self._first = (now, self.done)
    elapsed, counted = now - self._first[0], self.done - self._first[1]
    rate = counted / elapsed if elapsed > 0 and counted > 0 else 0.0
    left = (self.total - self.done) / rate if rate > 0 else None
    update = Update(self.task, self.done, self.total, self.unit, rate, left)
    if update.finished or now - self._last_log >= self._log_every:
      self._last_log = now
      logging.info(FORMAT, *update._args())  # pylint: disable=protected-access
    if (update.finished or self._last_notify is None or
        now - self._last_notify >= MIN_INTERVAL):
      self._last_notify = now
      _notify(update)
    return update

  def advance(self, units: int = 1) -> Update:
    return self.update(self.done + units)


def _notify(update: Update) -> None:
  with _lock:
    listeners = list(_listeners)
  for listener in listeners:
    try:
      listener(update)
    except Exception:  # pylint: disable=broad-except
      # A broken console must not fail a training step: drop it, say so once.
      remove_listener(listener)
      logging.warning("Progress listener %r raised; it is removed.", listener,
                      exc_info=True)


def keras_callback(reporter: Progress, keras_module: Any = None):
  """A Keras callback that advances ``reporter`` by one unit per training batch.

  Args:
    reporter: the Progress to advance.
    keras_module: ``tf_keras`` (the default) or ``keras`` (Keras 3): the callback
      must be of the model's own Keras.

  Returns:
    A callback for ``model.fit(..., callbacks=[...])``.
  """
  if keras_module is None:
    import tf_keras as keras_module  # pylint: disable=g-import-not-at-top

  class _ProgressCallback(keras_module.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      del batch, logs
      reporter.advance()

  return _ProgressCallback()
