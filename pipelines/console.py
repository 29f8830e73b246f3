"""What a person sees while a pipeline runs locally; everything else goes to a log file.

    session = console.Session(verbose=False)       # before TensorFlow is imported
    pipe = create_pipeline(...)                    # errors: session.abort(); exit 2
    session.keep_log(os.path.join(output_dir, "logs"))
    code = session.run(pipe, metadata_path)        # 0, or 1 when a step failed
    session.print(summary.render(...)); session.close()

The console gets one line per component as it starts and as it ends (state,
seconds, key figure), the progress of long steps, and the summary. Everything
else written to the process's file descriptors 1 and 2 (TensorFlow's C++ and
Python logs, absl, Beam, warnings, the TFLite converter, the Trainer module's
wheel build, subprocesses) goes to ``<output-dir>/logs/run-<timestamp>.log``: the
descriptors themselves are redirected (``os.dup2``), since TensorFlow's C++ code
writes to descriptor 2 directly, and the console writes to duplicates of the
original ones. With ``verbose=True`` nothing is redirected: the console shows it all.

How steps are followed: ``LocalDagRunner`` runs each component in this process
through ``tfx.orchestration.portable.launcher.Launcher.launch``; :func:`watch_components`
wraps that method for the duration of the run. The start, the end and a failure
come from the call itself (an exception is a failure whatever any log line says),
and the state and figures from ML Metadata by the execution id ``launch`` returns,
not from parsing TFX's log lines, whose wording can change between TFX versions.
Progress comes from ``components.common.progress`` listeners (same process).
"""

import contextlib
import logging
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, List, Optional, TextIO

CLEAR_LINE = "\r\x1b[K"  # only ever written to a terminal
_BAR_WIDTH = 20


class Console:
  """Lines for a person, on a terminal (live status line) or a pipe (plain lines).

  Args:
    out: where the lines go.
    tty: draw a live line (carriage return + erase) for the running step and its
      progress; False writes plain lines only, a progress line at most every
      ``plain_every`` seconds.
    nodes: the pipeline's component ids in run order, to number the steps.
    clock: seconds (tests pass a fake one).
  """

  def __init__(self, out: TextIO, tty: bool, nodes: Optional[List[str]] = None,
               plain_every: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    self.out, self.tty = out, tty
    self.nodes = list(nodes or [])
    self._width = max([len(n) for n in self.nodes] + [12])
    self._plain_every = plain_every
    self._clock = clock
    self._live = False
    self._running: Optional[str] = None
    self._last_plain: Optional[float] = None

  def print(self, text: str = "") -> None:
    """Permanent lines (the live line, if any, is replaced)."""
    if self._live:
      self.out.write(CLEAR_LINE)
      self._live = False
    self.out.write(text + "\n")
    self.out.flush()

  def _draw(self, text: str) -> None:
    self.out.write(CLEAR_LINE + text)
    self.out.flush()
    self._live = True

  def _label(self, node: str) -> str:
    total = len(self.nodes)
    number = (f"[{self.nodes.index(node) + 1:>{len(str(total))}}/{total}] "
              if node in self.nodes else "")
    return f"{number}{node:<{self._width}}"

  def step_started(self, node: str) -> None:
    self._running = node
    self._last_plain = self._clock()
    if self.tty:
      self._draw(f"{self._label(node)} running")
    else:
      self.print(f"{self._label(node)} running")

  def step_ended(self, node: str, seconds: float, state: str,
                 figure: str = "") -> None:
    self._running = None
    text = f"{self._label(node)} {state.lower():<8} {seconds:7.1f} s"
    self.print(f"{text}  {figure}" if figure else text)

  def step_failed(self, node: str, seconds: float) -> None:
    self._running = None
    self.print(f"{self._label(node)} {'FAILED':<8} {seconds:7.1f} s")

  def on_progress(self, update) -> None:
    """A progress listener (``progress.Update``): a live bar on a terminal,
    periodic lines otherwise."""
    from tfx_compression.components.common import progress  # pylint: disable=g-import-not-at-top
    prefix = self._label(self._running) if self._running else ""
    if self.tty:
      filled = int(_BAR_WIDTH * update.done / max(1, update.total))
      bar = "#" * filled + "." * (_BAR_WIDTH - filled)
      self._draw(f"{prefix} {update.task} [{bar}] {update.done}/{update.total} "
                 f"{update.unit}, {update.rate:.1f} {update.unit}/s, "
                 f"{progress.format_seconds(update.seconds_left)} left")
      return
    now = self._clock()
    if update.finished or update.seconds_left is None or (
        self._last_plain is not None and now - self._last_plain < self._plain_every):
      return
    self._last_plain = now
    self.print(f"{' ' * len(prefix)} {update.task} {update.done}/{update.total} "
               f"{update.unit}, {update.rate:.1f} {update.unit}/s, "
               f"{progress.format_seconds(update.seconds_left)} left")


def node_id_of(launcher: Any) -> str:
  """The component id a TFX Launcher runs ('?' if TFX ever stops keeping it)."""
  node = getattr(launcher, "_pipeline_node", None)
  return node.node_info.id if node is not None else "?"


@contextlib.contextmanager
def watch_components(on_start: Callable[[str], None],
                     on_end: Callable[[str, float, Any], None],
                     on_fail: Callable[[str, float, BaseException], None]):
  """Calls the functions around every component run by a TFX Launcher in this process.

  ``on_end`` gets (node id, seconds, ExecutionInfo or None); ``on_fail`` gets the
  exception, which is then raised on as before.
  """
  from tfx.orchestration.portable import launcher as launcher_lib  # pylint: disable=g-import-not-at-top
  original = launcher_lib.Launcher.launch

  def launch(self):
    node = node_id_of(self)
    on_start(node)
    started = time.monotonic()
    try:
      info = original(self)
    except BaseException as e:  # KeyboardInterrupt too: say which step stopped
      on_fail(node, time.monotonic() - started, e)
      raise
    on_end(node, time.monotonic() - started, info)
    return info

  launcher_lib.Launcher.launch = launch
  try:
    yield
  finally:
    launcher_lib.Launcher.launch = original


class _Capture:
  """Descriptors 1 and 2 redirected to a file; the originals kept for the console."""

  def __init__(self, path: str):
    self.path = path
    _flush_std()
    self.saved_out, self.saved_err = os.dup(1), os.dup(2)
    self._point_at(path)

  @staticmethod
  def _point_at(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)

  def move(self, path: str) -> None:
    """Continues the log at ``path``, with what was written so far."""
    _flush_std()
    with open(self.path, "rb") as src, open(path, "ab") as dst:
      dst.write(src.read())
    self._point_at(path)
    os.remove(self.path)
    self.path = path

  def stop(self) -> None:
    _flush_std()
    os.dup2(self.saved_out, 1)
    os.dup2(self.saved_err, 2)
    os.close(self.saved_out)
    os.close(self.saved_err)


def _flush_std() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass


def log_path_for(log_dir: str, now: Optional[float] = None) -> str:
  """``<log_dir>/run-YYYYmmdd-HHMMSS.log``, not yet taken."""
  stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
  path = os.path.join(log_dir, f"run-{stamp}.log")
  n = 2
  while os.path.exists(path):
    path = os.path.join(log_dir, f"run-{stamp}-{n}.log")
    n += 1
  return path


class Session:
  """One local run as a person sees it; see the module docstring for the order of calls.

  Args:
    verbose: show everything on the console and write no log file.
  """

  def __init__(self, verbose: bool = False):
    self.verbose = verbose
    self.log_path: Optional[str] = None
    self._capture: Optional[_Capture] = None
    if verbose:
      out, err = sys.stdout, sys.stderr
    else:
      fd, tmp = tempfile.mkstemp(prefix="tfx-compression-run-", suffix=".log")
      os.close(fd)
      self._capture = _Capture(tmp)
      out = os.fdopen(os.dup(self._capture.saved_out), "w", buffering=1,
                      encoding="utf-8", errors="replace")
      err = os.fdopen(os.dup(self._capture.saved_err), "w", buffering=1,
                      encoding="utf-8", errors="replace")
      # Our components' absl.logging.info lines belong in the log file.
      from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
      logging.basicConfig()
      absl_logging.set_verbosity(absl_logging.INFO)
    self.err = err
    self.console = Console(out, tty=out.isatty())

  def print(self, text: str = "") -> None:
    self.console.print(text)

  def abort(self) -> None:
    """Undoes the redirection and deletes the log (a bad option: nothing written)."""
    if self._capture:
      tmp = self._capture.path
      self._capture.stop()
      self._capture = None
      os.remove(tmp)

  def keep_log(self, log_dir: str) -> None:
    """Moves the log into ``log_dir`` and prints its path."""
    if not self._capture:
      return
    os.makedirs(log_dir, exist_ok=True)
    self._capture.move(log_path_for(log_dir))
    self.log_path = self._capture.path
    self.print(f"log: {self.log_path}")

  def run(self, pipe, metadata_path: str, runner: Any = None) -> int:
    """Runs ``pipe`` with LocalDagRunner (or ``runner``); 0, or 1 if a step failed."""
    # Imported here: this module is imported before TensorFlow is (and its output
    # redirected); these import it.
    from tfx_compression.components.common import progress  # pylint: disable=g-import-not-at-top
    from tfx_compression.pipelines import summary  # pylint: disable=g-import-not-at-top
    if runner is None:
      from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
      runner = tfx.orchestration.LocalDagRunner()
    c = self.console
    c.nodes = [comp.id for comp in pipe.components]
    c._width = max([len(n) for n in c.nodes] + [12])  # pylint: disable=protected-access
    failed = {}

    def on_end(node, seconds, info):
      state, figure = "complete", ""
      if info is not None:
        try:
          state, figure = summary.step_outcome(metadata_path, info.execution_id)
        except Exception:  # pylint: disable=broad-except
          # The line is a courtesy; a figure that cannot be read never fails a run.
          logging.warning("Could not read %s's outcome from ML Metadata.", node,
                          exc_info=True)
      c.step_ended(node, seconds, state, figure)

    def on_fail(node, seconds, error):
      failed.update(node=node, error=error)
      c.step_failed(node, seconds)

    progress.add_listener(c.on_progress)
    try:
      with watch_components(c.step_started, on_end, on_fail):
        runner.run(pipe)
    except KeyboardInterrupt:
      c.print("interrupted" + (f"; log: {self.log_path}" if self.log_path else ""))
      return 130
    except Exception as e:  # pylint: disable=broad-except
      # The traceback goes to the log (or, --verbose, to the console as before).
      traceback.print_exception(e, file=sys.stderr)
      _flush_std()
      node = failed.get("node")
      where = f"{node} failed" if node else "the pipeline failed"
      c.print(f"error: {where}: {one_line(e)}")
      if self.log_path:
        c.print(f"full log with the traceback: {self.log_path}")
      return 1
    finally:
      progress.remove_listener(c.on_progress)
    return 0

  def close(self) -> None:
    if self._capture:
      self._capture.stop()
      self._capture = None


def one_line(error: BaseException) -> str:
  """``TypeName: first line of the message`` (our messages say what to do there)."""
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
