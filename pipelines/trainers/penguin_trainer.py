"""TFX's own penguin Keras module, plus the one line compression needs.

``preprocessing_fn`` and the model are TFX's, as shipped in
``tfx/examples/penguin/penguin_utils_keras.py``; ``run_fn`` is TFX's, copied
unchanged, with one line added after it writes the serving SavedModel:

    model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))

TFX's module does ``from tensorflow import keras``, which is Keras 3 unless
``TF_USE_LEGACY_KERAS=1`` is set: the model is a Keras 3 model, and ``tf.saved_model.save``
writes no Keras metadata. ``model.keras`` beside the SavedModel lets the Pruner,
the Quantizer and the CompressionEvaluator load it back as Keras 3. The module
really needs Keras 3 (under ``TF_USE_LEGACY_KERAS=1`` the added line fails on
TFT's layer), so the penguin pipeline runs with that variable unset.
"""

import os

import absl
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.examples.penguin import penguin_utils_base as base
from tfx.examples.penguin import penguin_utils_keras as _penguin

preprocessing_fn = _penguin.preprocessing_fn


def run_fn(fn_args):
  """TFX's penguin ``run_fn`` (TFX 1.16), plus the model.keras line."""
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)

  train_dataset = base.input_fn(
      fn_args.train_files,
      fn_args.data_accessor,
      tf_transform_output,
      base.TRAIN_BATCH_SIZE)

  eval_dataset = base.input_fn(
      fn_args.eval_files,
      fn_args.data_accessor,
      tf_transform_output,
      base.EVAL_BATCH_SIZE)

  if fn_args.hyperparameters:
    hparams = keras_tuner.HyperParameters.from_config(fn_args.hyperparameters)
  else:
    hparams = _penguin._get_hyperparameters()  # pylint: disable=protected-access
  absl.logging.info('HyperParameters for training: %s' % hparams.get_config())

  mirrored_strategy = tf.distribute.MirroredStrategy()
  with mirrored_strategy.scope():
    model = _penguin._make_keras_model(hparams)  # pylint: disable=protected-access

  # Write logs to path
  tensorboard_callback = tf.keras.callbacks.TensorBoard(
      log_dir=fn_args.model_run_dir, update_freq='epoch')

  model.fit(
      train_dataset,
      steps_per_epoch=fn_args.train_steps,
      validation_data=eval_dataset,
      validation_steps=fn_args.eval_steps,
      callbacks=[tensorboard_callback])

  signatures = base.make_serving_signatures(model, tf_transform_output)
  tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures)
  model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))
