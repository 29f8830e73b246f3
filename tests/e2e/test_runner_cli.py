"""The local runner's bad input: one-line errors, exit code 2, nothing written."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
  return subprocess.run([sys.executable, "-m", "tfx_compression.pipelines.local_runner", *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_help_names_the_options():
  proc = run("--help")
  assert proc.returncode == 0
  for option in ["--output-dir", "--data-dir", "--train-steps", "--target-sparsity",
                 "--quantization", "--max-drop", "--verbose"]:
    assert option in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["--data-dir", "/no/such/dir"], "--data-dir '/no/such/dir' does not exist"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--quantization", "int4"], "--quantization"),
    (["--train-steps", "0"], "--train-steps 0"),
    (["--target-sparsity", "1.5"], "target_sparsity"),
    (["--prune-steps", str(2**31)], "--prune-steps 2147483648 is too large"),
    (["--search-sparsities", "0.5,,0.7"], "--search-sparsities '0.5,,0.7'"),
    (["--evaluator-beam-args", "runner=DirectRunner"],
     "'runner=DirectRunner' is not a --flag"),
])
def test_bad_arguments(tmp_path, args, needle):
  out = tmp_path / "out"
  proc = run("--output-dir", str(out), *args)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
  # Only the error: refused before TensorFlow is imported, so none of its output.
  assert proc.stderr.strip().splitlines() == errors
  assert proc.stdout == ""
  assert not out.exists()


def test_data_dir_without_csv(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "notes.txt").write_text("x")
  proc = run("--output-dir", str(tmp_path / "out"), "--data-dir",
             str(tmp_path / "data"))
  assert proc.returncode == 2 and "holds no .csv file" in proc.stderr
  assert not (tmp_path / "out").exists()


def test_unwritable_output_dir(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  proc = run("--output-dir", str(blocker / "out"))
  assert proc.returncode == 2 and "--output-dir" in proc.stderr
  assert "not writable" in proc.stderr


def test_quantization_choices_match_the_pipeline():
  from tfx_compression.pipelines import local_runner, pipeline
  assert local_runner.QUANTIZATION_CHOICES == pipeline.QUANTIZATION_CHOICES
