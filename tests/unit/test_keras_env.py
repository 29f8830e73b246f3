"""Importing `tfx_compression` leaves the choice of Keras to the user's code.

Each case runs in a fresh Python: which Keras `tf.keras` is gets fixed once per
process.
"""

import os
import subprocess
import sys

import pytest

from tfx_compression.components.common import keras_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code, legacy=None):
  env = {k: v for k, v in os.environ.items() if k != keras_env.ENV}
  if legacy is not None:
    env[keras_env.ENV] = legacy
  proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.strip().splitlines()[-1]


def test_unset_gives_keras3_to_a_module_imported_after_us():
  # TFX's own penguin module does `from tensorflow import keras`.
  out = run("import os, sys, keras;"
            "from tfx_compression import Pruner, Quantizer, CompressionEvaluator;"
            "tfmot = 'tensorflow_model_optimization' in sys.modules;"
            "from tfx.examples.penguin import penguin_utils_keras as p;"
            "print(isinstance(p.keras.layers.Dense(1), keras.layers.Layer),"
            " os.environ.get('TF_USE_LEGACY_KERAS'), tfmot)")
  # tfmot (which sets TF_USE_LEGACY_KERAS=1) is not imported until needed.
  assert out == "True None False"


def test_set_to_1_gives_tf_keras_as_before():
  out = run("import tf_keras; from tfx_compression import Pruner;"
            "from tensorflow import keras;"
            "print(keras.Model is tf_keras.Model)", legacy="1")
  assert out == "True"


def test_tfmot_import_keeps_keras3_and_the_variable_unset():
  out = run("import os, keras, tf_keras; from tfx_compression import Pruner;"
            "from tfx_compression.components.common import keras_env;"
            "tfmot = keras_env.import_tfmot(); import tensorflow as tf;"
            "m = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]);"
            "p = tfmot.sparsity.keras.prune_low_magnitude(m);"
            "print(tf.keras.Model is keras.Model, type(p).__module__.startswith('tf_keras'),"
            " os.environ.get('TF_USE_LEGACY_KERAS'))")
  assert out == "True True None"


def test_tf_keras_imported_directly_is_keras2_beside_keras3():
  out = run("import tfx_compression, tf_keras, keras;"
            "from tfx_compression.components.common import keras_env as k;"
            "print(k.keras_version_of(tf_keras.Sequential([tf_keras.Input((2,)),"
            " tf_keras.layers.Dense(1)])), k.keras_version_of(keras.Sequential("
            "[keras.Input((2,)), keras.layers.Dense(1)])))")
  assert out == "2 3"


def test_not_a_keras_model_is_a_type_error():
  with pytest.raises(TypeError, match=r"`model` must be a Keras model .* got "
                     r"builtins.bytes"):
    keras_env.keras_version_of(b"TFL3")
