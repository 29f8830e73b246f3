"""Shared fixtures: digits Examples/Schema artifacts and a briefly trained demo model.

Session-scoped so the model trains once per test run. Nothing here chooses the
Keras of ``tf.keras``: tests use ``tf_keras`` (Keras 2) or ``keras`` (Keras 3) by
name, and what depends on ``TF_USE_LEGACY_KERAS`` runs in its own process.
"""

import pytest

from tfx_compression.components.common import keras_env

# tensorflow-transform (imported by the fixtures) sets TF_USE_LEGACY_KERAS=1 on
# import; the processes tests start must get the environment as it was.
with keras_env.user_keras_unchanged():
  from tests import fixtures


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
