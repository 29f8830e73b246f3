"""components/common/progress.py: log lines, listeners, the Keras callback."""

import logging

import pytest

from tfx_compression.components.common import progress


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


@pytest.fixture
def records():
  """Progress records logged through absl during the test."""
  caught = []

  class Handler(logging.Handler):

    def emit(self, record):
      if progress.parse_record(record):
        caught.append(record)

  handler = Handler()
  absl_logger = logging.getLogger("absl")
  old_level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  absl_logger.addHandler(handler)
  yield caught
  absl_logger.removeHandler(handler)
  absl_logger.setLevel(old_level)


def test_logs_every_log_every_seconds_and_at_the_end(records):
  clock = FakeClock()
  p = progress.Progress("fine-tuning", total=100, log_every=10.0, clock=clock)
  for step in range(1, 101):
    clock.now += 0.5  # 2 steps/s: 50 s in all
    p.update(step)
  # at 10, 20, 30, 40 s and the final step (50 s)
  assert len(records) == 5
  last = progress.parse_record(records[-1])
  assert (last.task, last.done, last.total, last.unit) == ("fine-tuning", 100, 100,
                                                           "steps")
  assert last.rate == pytest.approx(2.0)
  assert last.seconds_left == 0
  first = progress.parse_record(records[0])
  assert first.done == 20 and first.seconds_left == pytest.approx(40.0)
  assert records[0].getMessage() == (
      "Progress: fine-tuning 20/100 steps, 2.0 steps/s, 40 s left")


def test_listeners_get_throttled_updates_and_the_last():
  clock = FakeClock()
  seen = []
  progress.add_listener(seen.append)
  try:
    p = progress.Progress("search", total=50, unit="examples", clock=clock)
    for i in range(1, 51):
      clock.now += 0.01  # 100 updates/s: far more than a console draws
      p.update(i)
  finally:
    progress.remove_listener(seen.append)
  assert seen[-1].finished and seen[-1].done == 50
  assert 2 <= len(seen) <= 5  # first, every 0.2 s, last
  assert all(isinstance(u, progress.Update) for u in seen)


def test_a_failing_listener_is_dropped_not_the_step():
  def broken(update):
    raise RuntimeError("console gone")
  progress.add_listener(broken)
  p = progress.Progress("fine-tuning", total=2, clock=FakeClock())
  p.update(1)
  p.update(2)  # no exception
  assert broken not in progress._listeners  # pylint: disable=protected-access


@pytest.mark.parametrize("total", [0, -3, 2.5, True])
def test_total_must_be_a_positive_integer(total):
  with pytest.raises(ValueError, match="`total` must be an integer >= 1"):
    progress.Progress("x", total=total)


@pytest.mark.parametrize("seconds,text", [(None, "?"), (4.4, "4 s"), (65, "1 min 05 s"),
                                          (3725, "1 h 02 min")])
def test_format_seconds(seconds, text):
  assert progress.format_seconds(seconds) == text
  if seconds is not None:
    assert progress._parse_seconds(text) == pytest.approx(  # pylint: disable=protected-access
        round(seconds) if seconds < 3600 else 3720)


def test_keras_callback_counts_training_batches():
  import numpy as np
  import tf_keras
  p = progress.Progress("fine-tuning", total=6, clock=FakeClock())
  model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
  model.compile("sgd", "mse")
  x = np.zeros((12, 2), np.float32)
  model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=0,
            callbacks=[progress.keras_callback(p)])
  assert p.done == 6


def test_the_rate_leaves_out_the_first_unit():
  """The first batch also traces the model: it must not make the time left absurd."""
  clock = FakeClock()
  p = progress.Progress("fine-tuning", total=1000, clock=clock)
  clock.now += 60.0  # tracing and compiling
  first = p.update(1)
  assert first.rate == 0.0 and first.seconds_left is None
  clock.now += 1.0
  second = p.update(11)
  assert second.rate == pytest.approx(10.0)
  assert second.seconds_left == pytest.approx(98.9)
