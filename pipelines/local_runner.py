"""Runs the demo compression pipeline locally with LocalDagRunner.

    python -m tfx_compression.pipelines.local_runner --help

Beam's DirectRunner does the data work; ML Metadata is a SQLite file under the output
directory. Everything goes under ``--output-dir`` (default ``outputs/``):
``pipeline_root/``, ``metadata.sqlite``, ``serving_model/`` (the push destination),
``logs/run-<timestamp>.log`` and, when ``--data-dir`` is not given, ``data/digits.csv``.

The console shows one line per step as it starts and ends, the progress of long
steps and a summary; everything else (TensorFlow, absl, Beam, warnings) goes to the
log file (``--verbose`` shows it all instead; see ``console.py``). Exit codes: 0 when
the pipeline ran (blessed or not), 1 when a step failed, 2 for bad options or data.
"""

import argparse
import glob
import os
import re
import shlex
import sys
import tempfile
from typing import List, Optional
import warnings

# A quiet console: TensorFlow's C++ start-up chatter and google-api deprecation
# notices hide the lines that matter. Set TF_CPP_MIN_LOG_LEVEL=0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", category=FutureWarning)

# Kept in step with pipelines.pipeline.QUANTIZATION_CHOICES (checked by a test);
# not imported from there so that --help and argument errors need no TensorFlow.
QUANTIZATION_CHOICES = ("none", "dynamic", "float16", "int8", "int16x8", "qat")
# The CompressionPlanner's choices (components/compression_planner/config.py),
# checked here without importing it (it imports TensorFlow).
OBJECTIVE_CHOICES = ("size", "gzip_size", "latency")
PLAN_MODES = ("int8", "float16", "dynamic", "none")
_PLAN_STRUCTURE = re.compile(r"^(channels|unstructured|channels\+unstructured|"
                             r"\d+:\d+)$")
DEFAULTS = dict(output_dir="outputs", train_steps=600, prune_steps=300,
                target_sparsity=0.8, sparsity_structure="unstructured",
                quantization="int8", max_drop=0.01, pipeline_name="digits_compression")


class _Parser(argparse.ArgumentParser):
  """Errors on one line with exit code 2 (argparse's usage block is noise in CI logs)."""

  def error(self, message):
    self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(
      prog="python -m tfx_compression.pipelines.local_runner",
      description="Run the digits compression pipeline (Trainer -> Pruner -> "
                  "Quantizer -> CompressionEvaluator -> Pusher) with LocalDagRunner.")
  p.add_argument("--output-dir", default=DEFAULTS["output_dir"],
                 help="where the pipeline root, the SQLite metadata and the pushed "
                      "model go (default: %(default)s)")
  p.add_argument("--data-dir", default=None,
                 help="directory of CSV files with 64 pixel columns and `label` "
                      "(default: scikit-learn's digits, written to "
                      "<output-dir>/data)")
  p.add_argument("--train-steps", type=int, default=DEFAULTS["train_steps"],
                 help="Trainer steps (default: %(default)s)")
  p.add_argument("--prune-steps", type=int, default=DEFAULTS["prune_steps"],
                 help="Pruner fine-tuning steps (default: %(default)s)")
  p.add_argument("--target-sparsity", type=float, default=DEFAULTS["target_sparsity"],
                 help="fraction of weights (or channels) to remove, in [0, 1) "
                      "(default: %(default)s)")
  p.add_argument("--sparsity-structure", default=DEFAULTS["sparsity_structure"],
                 help="unstructured, an M:N block such as 2:4, or channels "
                      "(default: %(default)s)")
  p.add_argument("--search-sparsities", default=None,
                 help="comma-separated sparsities to try step by step, keeping the "
                      "sparsest that passes the gate (e.g. 0.5,0.6,0.7,0.8,0.9)")
  p.add_argument("--plan", action="store_true",
                 help="search the plan instead of one fixed Pruner + Quantizer: "
                      "a CompressionPlanner climbs each structure through "
                      "--search-sparsities (default 0.5 to 0.9), converts each "
                      "passing step in each mode and keeps the best candidate "
                      "within --max-drop by --objective; half of --prune-steps "
                      "fine-tunes each step")
  add_plan_options(p)
  p.add_argument("--distillation-weight", type=float, default=None,
                 help="distillation_weight in [0, 1] of the Pruner (with "
                      "--plan: of every planner step): fine-tune towards the "
                      "Trainer's model's outputs too (default: 0, off)")
  p.add_argument("--distillation-temperature", type=float, default=None,
                 help="distillation_temperature T > 0 (default: 2.0)")
  p.add_argument("--quantization", default=DEFAULTS["quantization"],
                 choices=QUANTIZATION_CHOICES,
                 help="Quantizer mode, or none to gate the pruned SavedModel "
                      "(default: %(default)s)")
  p.add_argument("--int8-io", default="float32", choices=("float32", "int8", "uint8"),
                 help="dtype of the int8 model's inputs and outputs: int8 gives "
                      "an integer-only model, without a QUANTIZE op per input "
                      "feature (default: %(default)s)")
  p.add_argument("--pack-inputs", action="store_true",
                 help="give the TFLite model one [1, 64] input instead of 64 "
                      "named ones (Quantizer pack_inputs=1): no QUANTIZE op per "
                      "feature in an int8 model")
  p.add_argument("--max-drop", type=float, default=DEFAULTS["max_drop"],
                 help="accuracy threshold: largest allowed accuracy drop of the "
                      "compressed model, 0.01 = one point (default: %(default)s)")
  p.add_argument("--min-accuracy", type=float, default=None,
                 help="optional absolute accuracy floor for the compressed model")
  p.add_argument("--pipeline-name", default=DEFAULTS["pipeline_name"],
                 help="pipeline name in ML Metadata (default: %(default)s)")
  p.add_argument("--keras", type=int, choices=(2, 3), default=2,
                 help="train the demo CNN with tf_keras (2) or Keras 3 (3); the "
                      "components follow the model (default: %(default)s)")
  p.add_argument("--evaluator-beam-args", default=None, metavar='"ARGS"',
                 help="Beam pipeline arguments for the CompressionEvaluator's job "
                      "only, in one quoted string, e.g. \"--runner=tfx_compression."
                      "components.compression_evaluator.dask_runner.DaskRunner "
                      "--dask_client_address=tcp://127.0.0.1:8786\"; one flag alone "
                      "as --evaluator-beam-args=--flag=value (the other steps "
                      "keep the in-memory DirectRunner)")
  p.add_argument("--no-cache", action="store_true",
                 help="re-run every step even when its inputs are unchanged")
  p.add_argument("--verbose", action="store_true",
                 help="show every library's output on the console instead of "
                      "writing it to <output-dir>/logs/run-<timestamp>.log")
  return p


def _fail(message: str) -> "NoReturn":  # noqa: F821
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


# TrainArgs.num_steps is an int32 in TFX's proto.
MAX_STEPS = 2**31 - 1


def check_args(args) -> None:
  """Validates options, paths and data before anything is written; exits 2 with a one-line error."""
  if not args.pipeline_name.strip():
    _fail(f"--pipeline-name {args.pipeline_name!r} is empty; give the name ML "
          f"Metadata records the runs under, e.g. {DEFAULTS['pipeline_name']}.")
  if not args.output_dir.strip():
    _fail(f"--output-dir {args.output_dir!r} is empty; give a directory, e.g. "
          f"--output-dir {DEFAULTS['output_dir']} (use . for the current one).")
  if args.data_dir is not None:
    if not os.path.isdir(args.data_dir):
      _fail(f"--data-dir {args.data_dir!r} does not exist or is not a directory; "
            "point it at a directory of CSV files, or omit it to use the digits.")
    if not glob.glob(os.path.join(args.data_dir, "*.csv")):
      _fail(f"--data-dir {args.data_dir!r} holds no .csv file; CsvExampleGen "
            "reads every CSV file in it.")
  out = os.path.abspath(args.output_dir)
  existing = out
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    _fail(f"--output-dir {args.output_dir!r} is not writable ({existing} "
          "cannot be written to); choose another directory.")
  if os.path.isdir(existing):
    try:
      tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
      _fail(f"--output-dir {args.output_dir!r} is not writable ({e.strerror}); "
            "choose another directory.")
  for flag, value in (("--train-steps", args.train_steps),
                      ("--prune-steps", args.prune_steps)):
    if value < 1:
      _fail(f"{flag} {value} must be >= 1.")
    if value > MAX_STEPS:
      _fail(f"{flag} {value} is too large: at most {MAX_STEPS:,} (a 32-bit "
            f"step count). Use a smaller number of steps.")
  if args.search_sparsities is not None:
    _check_search_sparsities(args.search_sparsities)
  if args.evaluator_beam_args is not None:
    evaluator_beam_args(args.evaluator_beam_args)
  _check_plan(args)
  if args.pack_inputs and args.quantization == "none":
    _fail("--pack-inputs needs a Quantizer (--quantization none gates the "
          "SavedModel, which keeps its named inputs). Drop --pack-inputs or "
          "choose a --quantization mode.")
  if args.int8_io != "float32" and args.quantization not in ("int8", "qat"):
    _fail(f"--int8-io {args.int8_io!r} needs --quantization int8 or qat (only a "
          f"full-integer model has integer inputs; got --quantization "
          f"{args.quantization!r}). Drop --int8-io or change --quantization.")


def evaluator_beam_args(text: str) -> List[str]:
  """The --evaluator-beam-args string as a list of Beam flags; exits 2 if malformed."""
  example = ('e.g. --evaluator-beam-args "--runner=DirectRunner '
             '--direct_num_workers=2"')
  try:
    flags = shlex.split(text)
  except ValueError as e:
    _fail(f"--evaluator-beam-args {text!r} cannot be split into arguments "
          f"({e}); quote it as a shell would, {example}.")
  bad = [f for f in flags if not f.startswith("--")] or ([] if flags else [text])
  if bad:
    _fail(f"--evaluator-beam-args {text!r}: {bad[0]!r} is not a --flag; give "
          f"Beam pipeline flags, {example}.")
  return flags


def _check_search_sparsities(text: str) -> None:
  items = [t.strip() for t in text.split(",")]
  example = "e.g. --search-sparsities 0.5,0.6,0.7,0.8,0.9"
  if not any(items):
    _fail(f"--search-sparsities {text!r} lists no sparsity; give comma-separated "
          f"numbers in [0, 1), {example}, or drop the option.")
  for item in items:
    try:
      float(item)
    except ValueError:
      _fail(f"--search-sparsities {text!r}: {item!r} is not a number; give "
            f"comma-separated numbers in [0, 1), {example}.")


def add_plan_options(p: argparse.ArgumentParser) -> None:
  """--objective, --plan-structures, --plan-modes (this runner's and Kubeflow's)."""
  p.add_argument("--objective", default=None, choices=OBJECTIVE_CHOICES,
                 help="with --plan: what the best candidate minimizes "
                      "(default: size, the raw bytes)")
  p.add_argument("--plan-structures", default=None,
                 help="with --plan: comma-separated structures to climb, of "
                      "channels, unstructured, M:N (e.g. 2:4), "
                      "channels+unstructured (default: all four)")
  p.add_argument("--plan-modes", default=None,
                 help="with --plan: comma-separated quantization modes, of "
                      "int8, float16, dynamic, none (default: all four)")


def _check_plan(args) -> None:
  """--plan and its options (the planner's own rules, without TensorFlow)."""
  plan_only = [f"{flag} {value}" for flag, value in (
      ("--objective", args.objective), ("--plan-structures",
                                        args.plan_structures),
      ("--plan-modes", args.plan_modes)) if value is not None]
  if not args.plan:
    if plan_only:
      _fail(f"{plan_only[0]} needs --plan (it sets the CompressionPlanner's "
            "search); add --plan or drop the option.")
    return
  fixed = [flag for flag, given in (
      ("--pack-inputs", args.pack_inputs), ("--int8-io",
                                            args.int8_io != "float32"))
           if given]
  if fixed:
    _fail(f"{fixed[0]} sets the fixed Pruner/Quantizer run, which --plan "
          "replaces (the planner packs inputs where the model allows); drop "
          f"{fixed[0]} or --plan.")
  for flag, text, ok, allowed in (
      ("--plan-structures", args.plan_structures,
       lambda s: bool(_PLAN_STRUCTURE.match(s)),
       "channels, unstructured, an M:N block such as 2:4, "
       "channels+unstructured"),
      ("--plan-modes", args.plan_modes, lambda s: s in PLAN_MODES,
       ", ".join(PLAN_MODES))):
    if text is None:
      continue
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in items if not ok(t)] or ([] if items else [text])
    example = ("channels,unstructured" if "structures" in flag
               else "int8,float16")
    if bad:
      _fail(f"{flag} {text!r}: {bad[0]!r} is not one of {allowed}; give a "
            f"comma-separated list, e.g. {flag} {example}.")


def _planner_kwargs(args) -> Optional[dict]:
  kwargs = {k: v for k, v in (
      ("structures", args.plan_structures),
      ("quantization_modes", args.plan_modes),
      ("sparsities", args.search_sparsities),
      ("distillation_weight", args.distillation_weight),
      ("distillation_temperature", args.distillation_temperature))
            if v is not None}
  return kwargs or None


def _check_data_and_destination(args) -> None:
  """The CSVs CsvExampleGen will read, and the Pusher's destination (no TensorFlow)."""
  from tfx_compression.pipelines import digits_data  # pylint: disable=g-import-not-at-top
  if args.data_dir is not None:
    try:
      digits_data.check_csv_dir(args.data_dir)
    except digits_data.CsvError as e:
      _fail(f"--data-dir: {e}")
  serving = os.path.join(os.path.abspath(args.output_dir), "serving_model")
  if os.path.exists(serving) and not os.path.isdir(serving):
    _fail(f"the push destination {serving} is a file, not a directory, so the "
          "Pusher could not write the model there; move it away or choose "
          "another --output-dir.")
  if os.path.isdir(serving):
    try:
      tempfile.TemporaryFile(dir=serving).close()
    except OSError as e:
      _fail(f"the push destination {serving} is not writable ({e.strerror}); "
            "the Pusher would fail after every other step ran. Make it "
            "writable or choose another --output-dir.")


def _quantizer_kwargs(args) -> Optional[dict]:
  kwargs = {}
  if args.int8_io != "float32":
    kwargs["int8_io_type"] = args.int8_io
  if args.pack_inputs:
    kwargs["pack_inputs"] = 1
  return kwargs or None


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  check_args(args)
  _check_data_and_destination(args)
  # From here the libraries' output goes to the log file (unless --verbose).
  from tfx_compression.pipelines import console  # pylint: disable=g-import-not-at-top
  session = console.Session(verbose=args.verbose)
  # Heavy imports only after the arguments are known to be good.
  from tfx_compression.pipelines import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from tfx_compression.pipelines import digits_data, summary  # pylint: disable=g-import-not-at-top

  out = os.path.abspath(args.output_dir)
  paths = dict(pipeline_root=os.path.join(out, "pipeline_root"),
               metadata_path=os.path.join(out, "metadata.sqlite"),
               serving_model_dir=os.path.join(out, "serving_model"))
  try:
    pipe = pipeline_lib.create_pipeline(
        pipeline_name=args.pipeline_name,
        data_root=args.data_dir or os.path.join(out, "data"),
        train_steps=args.train_steps,
        prune_steps=args.prune_steps,
        target_sparsity=args.target_sparsity,
        sparsity_structure=args.sparsity_structure,
        search_sparsities=None if args.plan else args.search_sparsities,
        quantization=args.quantization,
        max_drop=args.max_drop,
        min_value=args.min_accuracy,
        enable_cache=not args.no_cache,
        quantizer_kwargs=_quantizer_kwargs(args),
        pruner_kwargs=None if args.plan else {k: v for k, v in (
            ("distillation_weight", args.distillation_weight),
            ("distillation_temperature", args.distillation_temperature))
                       if v is not None} or None,
        keras=args.keras,
        plan=args.plan,
        objective=args.objective or "size",
        planner_kwargs=_planner_kwargs(args),
        **paths)
  except (ValueError, TypeError) as e:
    session.abort()
    _fail(str(e))
  if args.evaluator_beam_args is not None:
    from tfx_compression.components.compression_evaluator import component as evaluator_lib  # pylint: disable=g-import-not-at-top
    for node in pipe.components:
      if isinstance(node, evaluator_lib.CompressionEvaluator):
        # After the pipeline's own arguments, so these win.
        node.with_beam_pipeline_args(evaluator_beam_args(args.evaluator_beam_args))
  try:
    session.keep_log(os.path.join(out, "logs"))
    if args.data_dir is None:
      digits_data.ensure_digits_csv(os.path.join(out, "data"))
    code = session.run(pipe, paths["metadata_path"])
    if code == 0:
      session.print(summary.render(
          summary.collect(paths["metadata_path"], args.pipeline_name,
                          paths["serving_model_dir"]),
          log_path=session.log_path))
    return code
  finally:
    session.close()


if __name__ == "__main__":
  sys.exit(main())
