"""pipelines/console.py and the runner's summary lines: what a person sees."""

import io
import os
import re

import pytest

from tfx_compression.components.common import progress
from tfx_compression.pipelines import console, summary

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


class FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _update(done, total=300):
  return progress.Update("fine-tuning", done, total, "steps", 50.0,
                         (total - done) / 50.0)


def test_pipe_gets_plain_lines_and_periodic_progress():
  out, clock = io.StringIO(), FakeClock()
  c = console.Console(out, tty=False, nodes=["Trainer", "Pruner"], plain_every=10,
                      clock=clock)
  c.step_started("Pruner")
  for second in range(1, 26):
    clock.now = second
    c.on_progress(_update(second * 10))
  c.on_progress(_update(300))  # the end: the step's own line says it
  c.step_ended("Pruner", 25.04, "COMPLETE", "sparsity 80.00%")
  lines = out.getvalue().splitlines()
  assert lines[0] == "[2/2] Pruner       running"
  assert lines[-1] == "[2/2] Pruner       complete    25.0 s  sparsity 80.00%"
  progress_lines = lines[1:-1]
  assert len(progress_lines) == 2  # at 10 s and 20 s
  assert progress_lines[0].strip() == (
      "fine-tuning 100/300 steps, 50.0 steps/s, 4 s left")
  assert not CONTROL.search(out.getvalue())


def test_terminal_gets_one_live_line_per_step():
  out = io.StringIO()
  c = console.Console(out, tty=True, nodes=["Pruner"], clock=FakeClock())
  c.step_started("Pruner")
  c.on_progress(_update(150))
  c.step_failed("Pruner", 3.2)
  text = out.getvalue()
  assert console.CLEAR_LINE in text
  assert "[##########..........] 150/300 steps" in text
  # What stays on the screen: the last thing after the last erase.
  assert text.split(console.CLEAR_LINE)[-1] == "[1/1] Pruner       FAILED       3.2 s\n"


def test_watch_components_reports_start_end_and_failure(monkeypatch):
  from tfx.orchestration.portable import launcher as launcher_lib

  class Node:

    def __init__(self, name):
      self.node_info = type("Info", (), {"id": name})()

  class FakeLauncher:

    def __init__(self, name, error=None):
      self._pipeline_node = Node(name)
      self.error = error

  def fake_launch(self):
    if self.error:
      raise self.error
    return "execution-info"

  monkeypatch.setattr(launcher_lib.Launcher, "launch", fake_launch)
  events = []
  with console.watch_components(
      lambda n: events.append(("start", n)),
      lambda n, s, info: events.append(("end", n, info)),
      lambda n, s, e: events.append(("fail", n, str(e)))):
    assert launcher_lib.Launcher.launch(FakeLauncher("Trainer")) == "execution-info"
    with pytest.raises(ValueError, match="bad label"):
      launcher_lib.Launcher.launch(FakeLauncher("Pruner", ValueError("bad label")))
  assert events == [("start", "Trainer"), ("end", "Trainer", "execution-info"),
                    ("start", "Pruner"), ("fail", "Pruner", "bad label")]
  assert launcher_lib.Launcher.launch is fake_launch  # put back


def test_one_line_reason():
  err = ValueError("`label_key`='lable' is not a feature.\nmore detail")
  assert console.one_line(err) == "ValueError: `label_key`='lable' is not a feature."
  assert console.one_line(KeyError()) == "KeyError"


def test_log_path_is_not_reused(tmp_path):
  first = console.log_path_for(str(tmp_path), now=0)
  open(first, "w").close()
  second = console.log_path_for(str(tmp_path), now=0)
  assert re.fullmatch(r"run-\d{8}-\d{6}\.log", os.path.basename(first))
  assert second != first and second.endswith("-2.log")


CHANNELS_PRUNED = {
    "sparsity_structure": "channels", "sparsity": 0.012,
    "channels_kept": '{"conv1": 8, "conv2": 16, "dense1": 64}',
    "channels_before": '{"conv1": 32, "conv2": 64, "dense1": 256}',
    "params_before": 283786, "params_after": 20000,
    "macs_before": 1468000, "macs_after": 100000,
}


def _info(pruned):
  return {"pruned": pruned,
          "evaluation": {"uri": "/runs/eval dir/7", "metric": "accuracy",
                         "baseline_accuracy": 0.99, "candidate_accuracy": 0.98,
                         "sparsity": pruned.get("sparsity")},
          "blessing": {"blessed": 1}, "pushed": {"pushed": 0},
          "pruner_run": {"uri": "/runs/Pruner/model_run/5"},
          "serving_model_dir": "/serving"}


def test_summary_speaks_channels_for_channel_pruning():
  text = summary.render(_info(CHANNELS_PRUNED))
  header, _, baseline, compressed = text.splitlines()[:4]
  assert header.split()[-2:] == ["channels", "gate"]
  assert baseline.split()[-2:] == ["352", "-"]
  assert compressed.split()[-2:] == ["88", "BLESSED"]
  assert ("(channels: 88 of 352 kept (25%) in conv1, conv2, dense1; parameters "
          "283,786 -> 20,000; MACs 1,468,000 -> 100,000)") in text
  assert "1.20%" not in text  # the narrow model's weight zeros mean nothing here


def test_summary_keeps_weight_sparsity_for_the_others():
  text = summary.render(_info({"sparsity_structure": "unstructured",
                               "sparsity": 0.8}))
  assert text.splitlines()[0].split()[-2:] == ["sparsity", "gate"]
  assert text.splitlines()[3].split()[-2:] == ["80.00%", "BLESSED"]
  assert "channels:" not in text


def test_summary_links_the_report_tensorboard_and_the_log():
  text = summary.render(_info({"sparsity": 0.8}), log_path="/out/logs/run-1.log")
  assert "compression report: file:///runs/eval%20dir/7/report.html" in text
  assert re.search(r"fine-tuning curves: \S*tensorboard --logdir "
                   r"/runs/Pruner/model_run/5$", text, flags=re.M)
  assert text.splitlines()[-1] == "full log:           /out/logs/run-1.log"


@pytest.mark.parametrize("component,outputs,figure", [
    ("Pruner", {"Model": {"sparsity": 0.8, "target_sparsity": 0.8,
                          "eval_accuracy": 0.98, "baseline_eval_accuracy": 0.99}},
     "sparsity 80.00% (target 80.00%); eval accuracy 0.9900 -> 0.9800"),
    ("CompressionPruner", {"Model": CHANNELS_PRUNED},
     "channels: 88 of 352 kept (25%) in conv1, conv2, dense1; parameters "
     "283,786 -> 20,000; MACs 1,468,000 -> 100,000"),
    ("Quantizer", {"Model": {"quantization": "int8", "tflite_bytes": 308312}},
     "int8 TFLite 308,312 bytes"),
    ("CompressionEvaluator", {"ModelBlessing": {
        "blessed": 0, "metric": "accuracy", "baseline_accuracy": 0.99,
        "candidate_accuracy": 0.5}}, "NOT BLESSED, accuracy 0.9900 -> 0.5000"),
    ("Pusher", {"PushedModel": {"pushed": 1, "pushed_destination": "/s/1"}},
     "pushed to /s/1"),
    ("Pusher", {"PushedModel": {"pushed": 0}}, "nothing pushed"),
    ("CsvExampleGen", {"Examples": {
        "input_fingerprint": "split:single_split,num_files:2,total_bytes:1234"}},
     "read 2 file(s) 1,234 bytes"),
    ("Transform", {"TransformGraph": {}}, ""),
])
def test_key_figure(component, outputs, figure):
  assert summary.key_figure(component, outputs) == figure


def test_the_digits_csv_passes_the_data_dir_checks(tmp_path):
  from tfx_compression.pipelines import digits_data
  digits_data.ensure_digits_csv(str(tmp_path))
  assert digits_data.check_csv_dir(str(tmp_path)) == 1797


def test_csv_files_with_different_headers_are_refused(tmp_path):
  from tfx_compression.pipelines import digits_data
  header = digits_data.FEATURE_KEYS + ["label"]
  row = ",".join(["0"] * 64 + ["1"])
  (tmp_path / "a.csv").write_text(",".join(header) + "\n" + row + "\n")
  (tmp_path / "b.csv").write_text(",".join(header[::-1]) + "\n" + row + "\n")
  with pytest.raises(digits_data.CsvError, match=r"b\.csv: its header differs from "
                     r".*a\.csv's"):
    digits_data.check_csv_dir(str(tmp_path))


def test_pipe_waits_for_a_known_rate():
  out, clock = io.StringIO(), FakeClock()
  c = console.Console(out, tty=False, nodes=["Pruner"], plain_every=10, clock=clock)
  c.step_started("Pruner")
  clock.now = 30.0
  c.on_progress(progress.Update("fine-tuning", 1, 300, "steps", 0.0, None))
  assert out.getvalue().splitlines() == ["[1/1] Pruner       running"]
