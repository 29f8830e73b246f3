"""The CompressionEvaluator's predictors on Keras 3 baselines and candidates."""

import keras
import numpy as np
import pytest

from tfx_compression.components.compression_evaluator import predictors as evaluation
from tests.unit import test_keras3_export as k3


@pytest.fixture(scope="module")
def trainer_dir(tmp_path_factory):
  return k3.write_trainer_model(k3.build(), str(tmp_path_factory.mktemp("ev") / "sm"))


def test_keras3_saved_model_predicts_through_the_keras_predictor(trainer_dir):
  predictor = evaluation.ModelSource("baseline", "keras", trainer_dir).load()
  assert isinstance(predictor.model, keras.Model)
  assert sorted(predictor.input_names) == list(k3.FEATURES)
  assert predictor.num_outputs == 3
  feats = k3.features_of(k3.examples())
  np.testing.assert_allclose(predictor.predict(feats), k3.build()(feats),
                             rtol=1e-6)


def test_keras3_float_tflite_reference_agrees(trainer_dir):
  predictor = evaluation.ModelSource("baseline", "keras", trainer_dir).load()
  tflite = evaluation.TFLitePredictor(
      model_content=evaluation.keras_to_float_tflite(predictor.model))
  feats = k3.features_of(k3.examples())
  np.testing.assert_allclose(tflite.predict(feats), predictor.predict(feats),
                             rtol=1e-4, atol=1e-6)
