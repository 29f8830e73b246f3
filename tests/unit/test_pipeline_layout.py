"""The demo Trainer modules live alone: TFX packages every .py file beside them."""

import os

from tfx_compression.pipelines import penguin_pipeline
from tfx_compression.pipelines import pipeline


def test_trainer_modules_are_packaged_without_the_runners():
  # TFX builds the user-code wheel from every .py file in the module's
  # directory and fingerprints them all: a runner there would retrain the demo
  # whenever it changed.
  folder = os.path.dirname(pipeline.DEMO_MODULE)
  assert os.path.dirname(penguin_pipeline.MODULE_FILE) == folder
  assert sorted(f for f in os.listdir(folder) if f.endswith(".py")) == [
      "__init__.py", "digits_trainer.py", "digits_trainer_keras3.py",
      "penguin_trainer.py"]
  assert os.path.dirname(pipeline.DEMO_MODULE_KERAS3) == folder


def test_kubeflow_trainer_paths_import():
  import importlib  # pylint: disable=g-import-not-at-top
  from tfx_compression.pipelines import kubeflow_runner  # pylint: disable=g-import-not-at-top
  assert kubeflow_runner.TRAINER_RUN_FNS == pipeline.TRAINER_RUN_FNS
  for dotted in (*kubeflow_runner.TRAINER_RUN_FNS.values(),
                 penguin_pipeline.TRAINER_MODULE + ".run_fn"):
    module, name = dotted.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name)), dotted


def _beam_args(pipe):
  """{component id: its Beam args} for every Beam component of ``pipe``."""
  return {c.id: list(c.executor_spec.beam_pipeline_args)
          for c in pipe.components
          if hasattr(c.executor_spec, "beam_pipeline_args")}


def test_example_pipelines_give_beam_no_args_by_default(tmp_path):
  # Any Beam argument makes TFX build and stage a source package of itself
  # for every Beam step (2 s, ~55 MB left in /tmp), which the DirectRunner
  # never uses; Beam's defaults are what the pipelines want.
  common = dict(pipeline_name="p", pipeline_root=str(tmp_path),
                data_root=str(tmp_path), serving_model_dir=str(tmp_path))
  pipes = [pipeline.create_pipeline(**common),
           penguin_pipeline.create_pipeline(
               **common, compressed_serving_model_dir=str(tmp_path))]
  for pipe in pipes:
    args = _beam_args(pipe)
    assert {"CsvExampleGen", "StatisticsGen", "CompressionEvaluator"} <= set(args)
    assert all(a == [] for a in args.values()), args
  given = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
  args = _beam_args(pipeline.create_pipeline(**common, beam_pipeline_args=given))
  assert all(a == given for a in args.values()), args
