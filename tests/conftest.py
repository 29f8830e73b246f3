"""Shared fixtures: digits Examples/Schema artifacts and a briefly trained demo model.

Session-scoped so the model trains once per test run. Nothing here chooses the
Keras of ``tf.keras``: tests use ``tf_keras`` (Keras 2) or ``keras`` (Keras 3) by
name, and what depends on ``TF_USE_LEGACY_KERAS`` runs in its own process.
"""

import os
import shutil
import tempfile

import pytest

# What the tests and the libraries under them leave in the temp directory
# (TFX: a build directory and an unpacked wheel per module file and execution,
# and a ~55 MB source package per Beam step given beam args; Beam: its pipeline
# temp directories) goes in one directory per run, removed when the run ends,
# so that a machine that runs the suite again and again keeps its disk (one run
# left ~2.7 GB). Set before TensorFlow or TFX is imported, and inherited by the
# processes tests start. pytest's tmp_path directories stay where pytest keeps
# them (its last three runs).
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
RUN_TMP = tempfile.mkdtemp(prefix="tfx-compression-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = RUN_TMP

from tfx_compression.components.common import keras_env  # noqa: E402  pylint: disable=g-import-not-at-top

# tensorflow-transform (imported by the fixtures) sets TF_USE_LEGACY_KERAS=1 on
# import; the processes tests start must get the environment as it was.
with keras_env.user_keras_unchanged():
  from tests import fixtures


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  shutil.rmtree(RUN_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def examples_artifact(digits_root):
  return fixtures.write_examples(digits_root)


@pytest.fixture(scope="session")
def schema_artifact(digits_root):
  return fixtures.write_schema(digits_root)


@pytest.fixture(scope="session")
def trained_model():
  """The demo CNN trained for a few steps (about 90% eval accuracy)."""
  return fixtures.train_digits_model()


@pytest.fixture(scope="session")
def model_artifact(trained_model, digits_root):
  """The trained model saved as the Trainer would, as a Model artifact."""
  return fixtures.save_trainer_model(trained_model, digits_root)
