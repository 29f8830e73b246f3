"""The hand-written reference: what a user writes from the tfmot guides, no TFX.

train -> prune_low_magnitude (PolynomialDecay) -> strip_pruning -> TFLite
converter (float, dynamic range, full integer), pruning-preserving QAT, and a
hand-written L1 filter ranking with a rebuild of the narrower CNN for channel
pruning.

It is written as a user of tf_keras + tensorflow-model-optimization would write
it (guides: "Pruning in Keras", "Pruning for on-device inference", "Quantization
aware training comprehensive guide", "Post-training integer quantization"), with
the settings of our pipeline so that the two sides compare: the demo's CNN
(``tfx_compression.pipelines.trainers.digits_trainer.build_model``), the same train and eval examples
(the pipeline's own ExampleGen output), the same seeds, steps, batch sizes,
learning rates, schedule and target sparsity.

Example:

    result = run_reference(train_patterns, ReferenceSettings(train_steps=600))
    result.tflite["pruned_int8"]  # flatbuffer bytes
    result.seconds["prune"], result.seconds["convert_int8"]
"""

import dataclasses
import math
import time
from typing import Any, Dict, Optional, Sequence

import tfx_compression  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

from benchmarks import measure
from tfx_compression.pipelines.trainers import digits_trainer


@dataclasses.dataclass(frozen=True)
class ReferenceSettings:
  """The knobs, with our pipeline's defaults (Trainer, Pruner, Quantizer)."""
  train_steps: int = 600          # Trainer: TrainArgs(num_steps)
  train_batch_size: int = 64      # digits_trainer.BATCH_SIZE
  train_seed: int = 42            # digits_trainer.SEED
  prune_steps: int = 300          # Pruner train_steps
  target_sparsity: float = 0.8
  prune_end_step: Optional[int] = None  # None: 70% of the steps, as the Pruner
  prune_frequency: Optional[int] = None  # None: 20 mask updates, as the Pruner
  batch_size: int = 32            # Pruner batch_size
  learning_rate: float = 1e-3     # Pruner learning_rate
  seed: int = 0                   # Pruner / Quantizer seed
  representative_samples: int = 200
  qat_steps: int = 200            # Quantizer qat_steps
  qat_batch_size: int = 32        # Quantizer batch_size
  qat_learning_rate: float = 1e-4  # Quantizer learning_rate
  channel_sparsity: float = 0.8   # share of filters / units removed per layer
  channel_finetune_steps: int = 100
  with_qat: bool = True
  with_channels: bool = True


@dataclasses.dataclass
class ReferenceResult:
  tflite: Dict[str, bytes]        # row name -> flatbuffer
  seconds: Dict[str, float]       # step name -> wall time
  info: Dict[str, Any]


def train_dataset(patterns: Sequence[str], batch_size: int, seed: int):
  """Shuffled, repeated (features, label) batches of the train split."""
  return (measure.record_dataset(patterns)
          .shuffle(4096, seed=seed, reshuffle_each_iteration=True)
          .repeat().batch(batch_size).map(measure.parse_batch)
          .prefetch(tf.data.AUTOTUNE))


def train(patterns: Sequence[str], s: ReferenceSettings) -> keras.Model:
  """The demo CNN trained as the demo's Trainer module trains it."""
  keras.utils.set_random_seed(s.train_seed)
  tf.config.experimental.enable_op_determinism()
  model = digits_trainer.build_model()
  epochs = max(1, s.train_steps // 50)
  model.fit(train_dataset(patterns, s.train_batch_size, s.train_seed),
            steps_per_epoch=max(1, s.train_steps // epochs), epochs=epochs,
            verbose=0)
  return model


def _schedule_steps(s: ReferenceSettings):
  end = s.prune_end_step or int(round(0.7 * s.prune_steps))
  end = min(end, s.prune_steps - 1)
  freq = s.prune_frequency or max(1, end // 20)
  return end - end % freq, freq


def prune(model: keras.Model, patterns: Sequence[str],
          s: ReferenceSettings) -> keras.Model:
  """The tfmot guide: wrap the Dense/Conv layers, fine-tune, strip."""
  keras.utils.set_random_seed(s.seed)
  end_step, frequency = _schedule_steps(s)
  schedule = tfmot.sparsity.keras.PolynomialDecay(
      initial_sparsity=0.0, final_sparsity=s.target_sparsity, begin_step=0,
      end_step=end_step, frequency=frequency)

  def wrap(layer):
    # The model's own layers must not be wrapped (tfmot would change them in
    # place): clone_model hands us fresh copies.
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      return tfmot.sparsity.keras.prune_low_magnitude(
          layer, pruning_schedule=schedule)
    return layer

  base = keras.models.clone_model(model)
  base.set_weights(model.get_weights())
  wrapped = keras.models.clone_model(base, clone_function=wrap)
  wrapped.compile(optimizer=keras.optimizers.Adam(s.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
  wrapped.fit(train_dataset(patterns, s.batch_size, s.seed),
              steps_per_epoch=s.prune_steps, epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
  return tfmot.sparsity.keras.strip_pruning(wrapped)


def representative_dataset(patterns: Sequence[str], s: ReferenceSettings):
  """The guide's generator: one example at a time, as the converter asks."""
  def gen():
    ds = (measure.record_dataset(patterns).shuffle(4096, seed=s.seed)
          .take(s.representative_samples).batch(1).map(measure.parse_batch))
    for features, _ in ds:
      yield features
  return gen


def representative_flat(patterns: Sequence[str], s: ReferenceSettings):
  """The same examples as :func:`representative_dataset`, as one [1, 64] array."""
  features = representative_dataset(patterns, s)

  def gen():
    for f in features():
      yield [np.concatenate([f[k].numpy() for k in digits_trainer.FEATURE_KEYS],
                            axis=1)]
  return gen


def convert(model: keras.Model, mode: str, patterns: Sequence[str] = (),
            s: Optional[ReferenceSettings] = None, flat: bool = False) -> bytes:
  """The converter as the guides call it: 'float', 'dynamic', 'int8', 'qat'.

  ``flat``: the model takes one [batch, 64] input (see :func:`flat_input`).
  """
  converter = tf.lite.TFLiteConverter.from_keras_model(model)
  if mode in ("dynamic", "int8", "qat"):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "int8":
    converter.representative_dataset = (representative_flat if flat else
                                        representative_dataset)(patterns, s)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()


def pqat(pruned: keras.Model, patterns: Sequence[str],
         s: ReferenceSettings) -> keras.Model:
  """Pruning-preserving quantization-aware training (tfmot's combine API).

  quantize_annotate_model rejects the CNN's Rescaling layer, so, as the QAT
  guide shows for such models, only the Conv2D and Dense layers are annotated.
  """
  keras.utils.set_random_seed(s.seed)
  annotate = tfmot.quantization.keras.quantize_annotate_layer

  def annotate_fn(layer):
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      return annotate(layer)
    return layer

  base = keras.models.clone_model(pruned)
  base.set_weights(pruned.get_weights())
  annotated = keras.models.clone_model(base, clone_function=annotate_fn)
  qat_model = tfmot.quantization.keras.quantize_apply(
      annotated,
      tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
  qat_model.compile(optimizer=keras.optimizers.Adam(s.qat_learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(),
                    metrics=["accuracy"])
  qat_model.fit(train_dataset(patterns, s.qat_batch_size, s.seed),
                steps_per_epoch=s.qat_steps, epochs=1, verbose=0)
  return qat_model


# Channel pruning by hand: rank filters by L1 norm, rebuild narrower, fine-tune.


def _keep(kernel: np.ndarray, share_removed: float) -> np.ndarray:
  """Indices of the output channels with the largest L1 norms, in order."""
  n = kernel.shape[-1]
  k = max(1, int(math.ceil(n * (1.0 - share_removed))))
  norms = np.abs(kernel).reshape(-1, n).sum(axis=0)
  return np.sort(np.argsort(-norms, kind="stable")[:k])


def narrow_cnn(conv1: int, conv2: int, dense1: int) -> keras.Model:
  """The demo CNN with fewer filters/units (same layers and names otherwise)."""
  inputs = {k: keras.Input(shape=(1,), name=k, dtype=tf.float32)
            for k in digits_trainer.FEATURE_KEYS}
  x = keras.layers.Concatenate(name="pixels")(list(inputs.values()))
  x = keras.layers.Rescaling(1.0 / 16.0, name="scale")(x)
  x = keras.layers.Reshape((8, 8, 1), name="image")(x)
  x = keras.layers.Conv2D(conv1, 3, padding="same", activation="relu",
                          name="conv1")(x)
  x = keras.layers.Conv2D(conv2, 3, padding="same", activation="relu",
                          name="conv2")(x)
  x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Flatten(name="flatten")(x)
  x = keras.layers.Dense(dense1, activation="relu", name="dense1")(x)
  outputs = keras.layers.Dense(10, activation="softmax",
                               name="probabilities")(x)
  return keras.Model(inputs=inputs, outputs=outputs, name="digits_cnn_narrow")


def flat_input(model: keras.Model) -> keras.Model:
  """The same layers and weights fed one [batch, 64] tensor (no Concatenate)."""
  x = inputs = keras.Input(shape=(len(digits_trainer.FEATURE_KEYS),),
                           name="pixels_flat")
  start = [l.name for l in model.layers].index("pixels") + 1
  for layer in model.layers[start:]:
    x = layer(x)
  return keras.Model(inputs, x, name=model.name + "_flat")


def prune_channels(model: keras.Model, patterns: Sequence[str],
                   s: ReferenceSettings) -> keras.Model:
  """One-shot per-layer L1 filter pruning of conv1, conv2, dense1; fine-tune.

  Fine-tunes for as many steps as our Pruner spends on 'channels' (its
  train_steps plus finetune_steps).
  """
  keras.utils.set_random_seed(s.seed)
  w = {l.name: l.get_weights() for l in model.layers if l.get_weights()}
  k1 = _keep(w["conv1"][0], s.channel_sparsity)
  k2 = _keep(w["conv2"][0], s.channel_sparsity)
  k3 = _keep(w["dense1"][0], s.channel_sparsity)
  narrow = narrow_cnn(len(k1), len(k2), len(k3))
  pool_hw = model.get_layer("pool").output_shape[1:3]
  # Flatten orders dense1's inputs (row, column, channel): keep whole channels.
  d1 = w["dense1"][0].reshape(pool_hw[0], pool_hw[1], -1,
                              w["dense1"][0].shape[-1])
  narrow.get_layer("conv1").set_weights(
      [w["conv1"][0][..., k1], w["conv1"][1][k1]])
  narrow.get_layer("conv2").set_weights(
      [w["conv2"][0][:, :, k1][..., k2], w["conv2"][1][k2]])
  narrow.get_layer("dense1").set_weights(
      [d1[:, :, k2][..., k3].reshape(-1, len(k3)), w["dense1"][1][k3]])
  narrow.get_layer("probabilities").set_weights(
      [w["probabilities"][0][k3], w["probabilities"][1]])
  narrow.compile(optimizer=keras.optimizers.Adam(s.learning_rate),
                 loss=keras.losses.SparseCategoricalCrossentropy(),
                 metrics=["accuracy"])
  narrow.fit(train_dataset(patterns, s.batch_size, s.seed),
             steps_per_epoch=s.prune_steps + s.channel_finetune_steps, epochs=1,
             verbose=0)
  return narrow


def run_reference(train_patterns: Sequence[str],
                  s: ReferenceSettings = ReferenceSettings(),
                  timing_repeats: int = 1) -> ReferenceResult:
  """Runs every step by hand, timing each; returns the TFLite models.

  Rows: baseline (float), pruned (float), pruned_dynamic, pruned_int8,
  qat_int8, channels (float), channels_int8.

  Args:
    train_patterns: the train split's TFRecord files.
    s: the settings.
    timing_repeats: times the prune + int8 conversion are run in all; the
      median wall time is ``seconds['compression_steps_int8']`` (the models
      come from the first pass).
  """
  seconds: Dict[str, float] = {}
  out: Dict[str, bytes] = {}

  def timed(name, fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    seconds[name] = time.perf_counter() - start
    return value

  model = timed("train", train, train_patterns, s)
  out["baseline"] = timed("convert_float", convert, model, "float")
  pruned = timed("prune", prune, model, train_patterns, s)
  out["pruned"] = timed("convert_pruned_float", convert, pruned, "float")
  out["pruned_dynamic"] = timed("convert_dynamic", convert, pruned, "dynamic")
  out["pruned_int8"] = timed("convert_int8", convert, pruned, "int8",
                             train_patterns, s)
  info: Dict[str, Any] = {"sparsity": _kernel_sparsity(pruned)}
  if s.with_qat:
    qat_model = timed("qat", pqat, pruned, train_patterns, s)
    out["qat_int8"] = timed("convert_qat", convert, qat_model, "qat")
  if s.with_channels:
    narrow = timed("channels", prune_channels, model, train_patterns, s)
    out["channels"] = timed("convert_channels_float", convert, narrow, "float")
    out["channels_int8"] = timed("convert_channels_int8", convert, narrow,
                                 "int8", train_patterns, s)
    out["channels_int8_packed"] = convert(flat_input(narrow), "int8",
                                          train_patterns, s, flat=True)
    info["channels_params"] = int(narrow.count_params())
    info["channels_widths"] = [narrow.get_layer(n).get_weights()[0].shape[-1]
                               for n in ("conv1", "conv2", "dense1")]
  info["params"] = int(model.count_params())
  # The guide's steps for one compressed model, as our Pruner + Quantizer.
  samples = [(seconds["prune"], seconds["convert_int8"])]
  for _ in range(timing_repeats - 1):
    start = time.perf_counter()
    again = prune(model, train_patterns, s)
    middle = time.perf_counter()
    convert(again, "int8", train_patterns, s)
    samples.append((middle - start, time.perf_counter() - middle))
  totals = sorted(p + c for p, c in samples)
  seconds["compression_steps_int8"] = totals[len(totals) // 2]
  info["compression_steps_samples"] = [list(x) for x in samples]
  return ReferenceResult(out, seconds, info)


def _kernel_sparsity(model: keras.Model) -> float:
  zeros = total = 0
  for layer in model.layers:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      k = layer.get_weights()[0]
      zeros += int((k == 0).sum())
      total += k.size
  return zeros / total
