"""Trainer module of the real-architecture benchmark: MobileNetV2 on the digits.

An ordinary TFX Trainer module (``run_fn``), like the demo's
(``pipelines/trainers/digits_trainer.py``), for ``benchmarks/real_arch.py``: the
same 64 pixel features of the same CsvExampleGen split, made into a 32x32x3
image inside the model (Rescaling to [0, 1], Reshape 8x8x1, bilinear Resizing to
32x32, the grey channel three times), then ``tf_keras.applications.MobileNetV2``
(alpha 0.35, ``weights=None``, 10 classes, softmax) built on that tensor, so the
whole model is one flat functional graph the Pruner's channel analysis can
follow (not a nested application model).

The upscaling is part of the model so that the pipeline, the Pruner, the
Quantizer and the evaluator all see the demo's Examples unchanged.
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
ALPHA = 0.35
IMAGE_SIZE = 32
LEARNING_RATE = 2e-3
BN_MOMENTUM = 0.9


def _input_fn(file_pattern, data_accessor, schema, batch_size, seed=SEED):
  return data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL_KEY,
                                     shuffle_seed=seed),
      schema=schema).repeat()


def build_model(alpha: float = ALPHA, size: int = IMAGE_SIZE) -> keras.Model:
  """64 named pixel inputs -> 32x32x3 image -> MobileNetV2 (compiled)."""
  inputs = {k: keras.Input(shape=(1,), name=k, dtype=tf.float32)
            for k in FEATURE_KEYS}
  x = keras.layers.Concatenate(name="pixels")(list(inputs.values()))
  x = keras.layers.Rescaling(1.0 / 16.0, name="scale")(x)
  x = keras.layers.Reshape((8, 8, 1), name="image")(x)
  x = keras.layers.Resizing(size, size, name="upscale")(x)
  x = keras.layers.Concatenate(name="rgb")([x, x, x])
  body = keras.applications.MobileNetV2(
      input_tensor=x, alpha=alpha, weights=None, classes=10,
      classifier_activation="softmax")
  model = keras.Model(inputs=inputs, outputs=body.output,
                      name=f"mobilenetv2_{alpha:g}_digits")
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      # The application's 0.999 leaves the moving statistics mostly at their
      # initial values after the ~1,000 steps this small data set allows
      # (eval accuracy 0.11 at train accuracy 0.97 after 400 steps).
      layer.momentum = BN_MOMENTUM
  model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
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
  """Trains MobileNetV2 and writes the serving model, as the Trainer expects."""
  keras.utils.set_random_seed(SEED)
  tf.config.experimental.enable_op_determinism()
  from tensorflow_transform.tf_metadata import schema_utils
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = tfx.utils.parse_pbtxt_file(fn_args.schema_path, schema_pb2.Schema())
  train = _input_fn(fn_args.train_files, fn_args.data_accessor, schema, BATCH_SIZE)
  evaluation = _input_fn(fn_args.eval_files, fn_args.data_accessor, schema,
                         BATCH_SIZE)
  model = build_model()
  epochs = max(1, fn_args.train_steps // 100)
  model.fit(train, steps_per_epoch=max(1, fn_args.train_steps // epochs),
            epochs=epochs, validation_data=evaluation,
            validation_steps=max(1, fn_args.eval_steps), verbose=2)
  feature_spec = schema_utils.schema_as_feature_spec(schema).feature_spec
  model.save(fn_args.serving_model_dir, save_format="tf",
             signatures=make_serving_signatures(model, feature_spec))
