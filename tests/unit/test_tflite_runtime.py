"""The TFLite runtime: LiteRT when installed, tf.lite.Interpreter otherwise.

Where ai-edge-litert is installed (the TFX 1.21 set of `make test-current`) the two
runtimes are compared on the same models; everywhere, its absence is simulated by
hiding the module, and the results must not change.
"""

import sys

import numpy as np
import pytest
import tf_keras as keras

from tfx_compression.components.common import tflite_runtime
from tfx_compression.components.compression_evaluator import evaluation
from tfx_compression.components.common import tflite_convert

FEATURES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def fresh_choice():
  tflite_runtime.reset()
  yield
  tflite_runtime.reset()


def hide_litert(monkeypatch):
  """As if ai-edge-litert were not installed: importing it raises ImportError."""
  monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
  monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
  tflite_runtime.reset()


@pytest.fixture(scope="module")
def flatbuffers():
  """A float and an int8 flatbuffer of a tiny 3-feature, 4-class model."""
  keras.utils.set_random_seed(0)
  inputs = {n: keras.Input((1,), name=n) for n in FEATURES}
  x = keras.layers.Concatenate()(list(inputs.values()))
  x = keras.layers.Dense(8, activation="relu")(x)
  model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
  rng = np.random.RandomState(0)
  samples = [{n: rng.rand(1, 1).astype(np.float32) for n in FEATURES}
             for _ in range(20)]
  return {"float": tflite_convert.convert(model, "float"),
          "int8": tflite_convert.convert(model, "int8", samples=samples)}


def features(n=25):
  rng = np.random.RandomState(1)
  return {name: rng.rand(n, 1).astype(np.float32) for name in FEATURES}


def predict(content):
  return evaluation.TFLitePredictor(model_content=content).predict(features())


@pytest.mark.parametrize("mode", ["float", "int8"])
def test_same_predictions_and_io_without_litert(flatbuffers, mode, monkeypatch):
  default_name = tflite_runtime.runtime_name()
  default = predict(flatbuffers[mode])
  default_io = tflite_convert.describe_tflite(flatbuffers[mode])

  hide_litert(monkeypatch)
  assert tflite_runtime.runtime_name().startswith("tf.lite ")
  fallback = predict(flatbuffers[mode])
  assert fallback.shape == (25, 4)
  # Two builds of the same kernels: equal classes, float sums to rounding.
  np.testing.assert_allclose(fallback, default, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(fallback.argmax(1), default.argmax(1))
  assert tflite_convert.describe_tflite(flatbuffers[mode]) == default_io
  assert default_name.split()[0] in (tflite_runtime.LITERT,
                                     tflite_runtime.TF_LITE)


def test_without_litert_interpreters_are_tensorflows(flatbuffers, monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  hide_litert(monkeypatch)
  interpreter = tflite_runtime.make_interpreter(
      model_content=flatbuffers["float"], num_threads=1)
  assert type(interpreter) is tf.lite.Interpreter  # pylint: disable=unidiomatic-typecheck
  assert tflite_runtime.runtime_name() == f"tf.lite {tf.__version__}"


def test_litert_is_preferred_when_installed(flatbuffers, monkeypatch):
  """A stand-in ai_edge_litert records that it built every interpreter."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  built = []

  class Interpreter(tf.lite.Interpreter):

    def __init__(self, **kwargs):
      built.append(sorted(kwargs))
      super().__init__(**kwargs)

  module = type(sys)("ai_edge_litert.interpreter")
  module.Interpreter = Interpreter
  package = type(sys)("ai_edge_litert")
  package.interpreter = module
  monkeypatch.setitem(sys.modules, "ai_edge_litert", package)
  monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", module)
  tflite_runtime.reset()

  assert tflite_runtime.runtime_name().startswith("ai_edge_litert ")
  predict(flatbuffers["float"])
  tflite_convert.describe_tflite(flatbuffers["int8"])
  assert built == [["model_content", "num_threads"], ["model_content"]]


def test_the_choice_is_made_once(monkeypatch):
  first = tflite_runtime.runtime_name()
  hide_litert(monkeypatch)
  hidden = tflite_runtime.runtime_name()
  monkeypatch.undo()
  # Until reset(), the process keeps the runtime it chose first.
  assert tflite_runtime.runtime_name() == hidden
  tflite_runtime.reset()
  assert tflite_runtime.runtime_name() == first
