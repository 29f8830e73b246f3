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
