"""Trainer module of the demo: a seeded tf_keras CNN on the 8x8 digits.

An ordinary TFX Trainer module (``run_fn``), written for tf_keras as a user would:
it imports ``tf_keras`` by name, so it trains Keras 2 whatever ``TF_USE_LEGACY_KERAS``
says (``digits_trainer_keras3.py`` is the same model in Keras 3).
Conv2D 32 -> Conv2D 64 -> MaxPool -> Dense 256 -> Dense 10 (softmax), fed the 64
pixel features by name, and saved with ``model.save(..., save_format='tf')`` so the
SavedModel stays loadable as Keras, with a ``serving_default`` signature that takes
serialized tf.Examples.
"""

# pylint: disable=g-import-not-at-top
import tensorflow as tf
import tf_keras as keras
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
  """The demo CNN; inputs named by feature, as TFX Keras models usually are."""
  inputs = {k: keras.Input(shape=(1,), name=k, dtype=tf.float32)
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
  model.save(fn_args.serving_model_dir, save_format="tf",
             signatures=make_serving_signatures(model, feature_spec))


def _schema_proto():
  from tensorflow_metadata.proto.v0 import schema_pb2
  return schema_pb2.Schema()
