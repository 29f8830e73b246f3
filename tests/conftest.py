"""Shared fixtures: digits Examples/Schema artifacts and a briefly trained demo model.

Session-scoped so the model trains once per test run.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tfx_compression  # noqa: E402,F401  (Keras 2 before TensorFlow)
import pytest  # noqa: E402

from tests import fixtures  # noqa: E402


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
