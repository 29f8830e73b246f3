"""Importing `tfx_compression` puts Keras 2 in force, or says clearly why it cannot."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(code):
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_import_first_gives_tf_keras():
  proc = run("import tfx_compression, tensorflow as tf, tf_keras;"
             "print(tf.keras.Model is tf_keras.Model)")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().endswith("True")


def test_keras3_already_loaded_is_a_clear_error():
  proc = run("import tensorflow as tf; tf.keras.layers.Dense; import tfx_compression")
  assert proc.returncode != 0
  assert "Keras 3" in proc.stderr and "Import `tfx_compression` before TensorFlow" in proc.stderr


def test_a_user_trainer_module_written_for_tf_keras_just_works():
  # TFX's own penguin module uses `from tensorflow import keras`.
  proc = run("import tfx_compression; from tfx.examples.penguin import penguin_utils_keras as p;"
             "import tf_keras; print(isinstance(p.keras.layers.Dense(1), "
             "tf_keras.layers.Layer))")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().endswith("True")
