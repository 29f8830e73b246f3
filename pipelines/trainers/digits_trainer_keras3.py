"""Trainer module of the demo in Keras 3: the same seeded CNN on the 8x8 digits.

An ordinary Keras 3 TFX Trainer module (``run_fn``), as a user writes one today:
the same layers, seed and data as ``digits_trainer.py`` (tf_keras), saved with
``tf.saved_model.save`` and a ``serving_default`` signature that takes serialized
tf.Examples, plus the one line that lets the components load it back as Keras 3:

    model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))

It imports ``keras`` (Keras 3) by name, so it trains Keras 3 whatever
``TF_USE_LEGACY_KERAS`` says.
"""

import os

# pylint: disable=g-import-not-at-top
import keras
import tensorflow as tf
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

FEATURE_KEYS = [f"pixel_{i:02d}" for i in range(64)]
LABEL_KEY = "label"
BATCH_SIZE = 64
SEED = 42


def _input_fn(file_pattern, data_accessor, schema, batch_size, seed=SEED):
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL_KEY,
                                     shuffle_seed=seed),
      schema=schema).repeat()


def build_model() -> keras.Model:
  """The demo CNN (as digits_trainer.build_model), in Keras 3."""
  inputs = {k: keras.Input(shape=(1,), name=k, dtype="float32")
            for k in FEATURE_KEYS}
  x = keras.layers.Concatenate(name="pixels")(list(inputs.values()))
  x = keras.layers.Rescaling(1.0 / 16.0, name="scale")(x)
  x = keras.layers.Reshape((8, 8, 1), name="image")(x)
  x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(x)
  x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = keras.layers.Dense(256, activation="relu", name="dense1")(x)
  outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
  model = keras.Model(inputs=inputs, outputs=outputs, name="digits_cnn")
  model.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return model


def make_serving_signatures(model, schema_feature_spec):
  """serving_default: serialized tf.Examples -> class probabilities."""
  spec = {k: v for k, v in schema_feature_spec.items() if k != LABEL_KEY}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
  def serve_tf_examples_fn(serialized):
    features = tf.io.parse_example(serialized, spec)
    return {"probabilities": model(features)}

  return {"serving_default": serve_tf_examples_fn.get_concrete_function()}


def run_fn(fn_args: tfx.components.FnArgs):
  """Trains the CNN and writes the serving model, as the TFX Trainer expects."""
  keras.utils.set_random_seed(SEED)
  tf.config.experimental.enable_op_determinism()
  from tensorflow_transform.tf_metadata import schema_utils
  schema = tfx.utils.parse_pbtxt_file(fn_args.schema_path, _schema_proto())
  train = _input_fn(fn_args.train_files, fn_args.data_accessor, schema, BATCH_SIZE)
  evaluation = _input_fn(fn_args.eval_files, fn_args.data_accessor, schema,
                         BATCH_SIZE)
  model = build_model()
  epochs = max(1, fn_args.train_steps // 50)
  model.fit(train, steps_per_epoch=max(1, fn_args.train_steps // epochs),
            epochs=epochs, validation_data=evaluation,
            validation_steps=max(1, fn_args.eval_steps), verbose=2)
  feature_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
  tf.saved_model.save(model, fn_args.serving_model_dir,
                      signatures=make_serving_signatures(model, feature_spec))
  model.save(os.path.join(fn_args.serving_model_dir, "model.keras"))


def _schema_proto():
  from tensorflow_metadata.proto.v0 import schema_pb2
  return schema_pb2.Schema()
