"""Keras model + representative data + config -> a quantized TFLite model.

TFX-free: nothing here sees a URI, an artifact or exec_properties. The executor
loads the model, builds the datasets with :func:`example_data` and writes what
:func:`quantize` returns.

The TFLite model takes the Keras model's named inputs (one tensor per feature,
batch fixed to 1), never serialized tf.Examples: parsing strings is not a TFLite
builtin, and a device has features, not protos. The batch is fixed because a
``None`` batch plus a Reshape gives TFLite dynamic-sized tensors, which XNNPACK
cannot take whole (on the digits CNN: 75 us with batch None, 45 us with batch 1).

Example:

    config = QuantizerConfig(quantization="int8", label_key="label")
    representative, _ = example_data(["/data/Split-train/*"], schema, model,
                                     config)
    result = quantize(model, config, representative_data=representative)
    open("model.tflite", "wb").write(result.tflite_model)
"""

import dataclasses
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from tfx_compression.components.common import distillation
from tfx_compression.components.common import distribute
from tfx_compression.components.common import features as features_lib
from tfx_compression.components.common import keras_env
from tfx_compression.components.common import model_stats
from tfx_compression.components.common import tflite_convert
from tfx_compression.components.common import tflite_packing
from tfx_compression.components.quantizer.config import DATA_MODES
from tfx_compression.components.quantizer.config import QuantizerConfig

# Above this kernel sparsity the input counts as pruned, and QAT uses tfmot's
# pruning-preserving scheme so the zeros survive fine-tuning. A dense trained
# model has practically no exact zeros.
PRUNE_PRESERVE_MIN_SPARSITY = 0.01


@dataclasses.dataclass(frozen=True)
class QuantizationResult:
  """What :func:`quantize` produced.

  Attributes:
    tflite_model: the TFLite flatbuffer.
    io: how to feed it (see :func:`describe_tflite`), plus the mode, the
      preprocessing a caller must apply first and the label key.
    stats: sizes and sparsities (the executor's custom properties).
  """
  tflite_model: bytes
  io: Dict[str, Any]
  stats: Dict[str, Any]


def quantize(model, config: QuantizerConfig,
             representative_data: Optional[Iterable[Any]] = None,
             train_data: Optional[Any] = None,
             preprocessing: str = "none",
             measure_float: bool = True) -> QuantizationResult:
  """Converts a Keras 3 or tf_keras model to a quantized TFLite model.

  The input model is never modified: QAT fine-tunes a clone.

  Example:

      result = quantize(model, QuantizerConfig(quantization="float16"))
      result.stats["tflite_bytes"], result.io["inputs"][0]["name"]

  Args:
    model: a Keras 3 or tf_keras model whose inputs are named after the
      features. 'qat' takes tf_keras models only (tfmot is Keras 2 only).
    config: the Quantizer's parameters.
    representative_data: for 'int8', 'int16x8' and 'qat': an iterable of
      feature dicts (or (features, label) pairs), batched any way; the first
      ``config.num_representative_samples`` examples are used.
    train_data: for 'qat': a (features, label) tf.data.Dataset (or anything
      ``fit`` takes) yielding at least ``config.qat_steps`` batches.
    preprocessing: 'none', or 'transform' when the model's inputs are the
      Transform's outputs (recorded in ``io`` for callers).
    measure_float: also convert without quantization to report
      ``float_tflite_bytes`` (about as long as the conversion itself).

  Returns:
    A :class:`QuantizationResult`.

  Raises:
    TypeError: ``model`` is not a Keras model (e.g. TFLite bytes).
    ValueError: data missing or empty for a mode that needs it, a model QAT
      cannot rebuild, or 'qat' on a Keras 3 model.
    tflite_convert.ConversionError: the converter failed; the message names
      the ops.
  """
  _check_model(model, config.quantization, preprocessing)
  mode = config.quantization
  input_specs = features_lib.keras_input_specs(model)
  output_names = tflite_convert.model_output_names(model)
  input_sparsity = model_stats.sparsity_stats(model)["sparsity"]
  samples = _representative_samples(representative_data, config, input_specs)

  stats: Dict[str, Any] = {"quantization": mode,
                           "input_sparsity": float(input_sparsity)}
  converted_model = model
  if mode == "qat":
    if train_data is None:
      raise ValueError(
          "quantization='qat' fine-tunes on labelled examples, but no training "
          "data was given. Wire `examples` and set `label_key`.")
    # Clone, compile and fit under config.distribution's tf.distribute
    # strategy (none by default on one device).
    with distribute.scope(config.distribution):
      converted_model, qat_stats = _quantization_aware_model(
          model, config, train_data, input_sparsity)
    stats.update(qat_stats)

  packed = None
  convert_specs, convert_samples = input_specs, samples
  if config.pack_inputs:
    packed = tflite_packing.pack_inputs(converted_model)
    converted_model = packed.model
    convert_specs = features_lib.keras_input_specs(packed.model)
    convert_samples = [{tflite_packing.PACKED_INPUT: packed.pack(s)}
                       for s in samples]
    logging.info("Packing %d inputs into one %r tensor (Concatenate %r cut).",
                 len(packed.features), tflite_packing.PACKED_INPUT,
                 packed.concatenate)

  logging.info("Converting to TFLite, quantization=%s, %d representative "
               "example(s).", mode, len(samples))
  tflite_model = tflite_convert.convert(
      converted_model, mode, samples=convert_samples,
      io_type=config.int8_io_type,
      allow_select_ops=bool(config.allow_select_ops),
      input_specs=convert_specs, output_names=output_names)

  if measure_float:
    try:
      float_model = tflite_convert.convert(
          model, "float", allow_select_ops=bool(config.allow_select_ops),
          input_specs=input_specs, output_names=output_names)
      stats["float_tflite_bytes"] = len(float_model)
    # Only a reference figure: never fatal.
    except tflite_convert.ConversionError as e:
      logging.warning("No float TFLite reference size: %s", e)

  weights = tflite_convert.tflite_weight_sparsity(tflite_model)
  stats.update(
      tflite_bytes=len(tflite_model),
      tflite_gzip_bytes=model_stats.gzip_bytes(tflite_model),
      sparsity=weights["sparsity"],
      tflite_weight_count=weights["weight_count"],
      representative_samples=len(samples),
  )
  io = _describe(tflite_model, config, preprocessing, packed)
  logging.info("TFLite model: %d bytes (%d gzipped), weight sparsity %.4f "
               "(input %.4f).", stats["tflite_bytes"],
               stats["tflite_gzip_bytes"], stats["sparsity"], input_sparsity)
  return QuantizationResult(tflite_model=tflite_model, io=io, stats=stats)


def _check_model(model, mode: str, preprocessing: str) -> None:
  """What ``quantize`` refuses before any work: not a Keras model, an unknown
  ``preprocessing``, QAT on Keras 3."""
  if isinstance(model, (bytes, bytearray)):
    raise TypeError("`model` is already a TFLite flatbuffer; the Quantizer "
                    "needs the Keras model it came from (the Trainer's or the "
                    "Pruner's output).")
  keras_version = keras_env.keras_version_of(model)  # TypeError if not Keras
  if preprocessing not in ("none", "transform"):
    raise ValueError(f"`preprocessing`={preprocessing!r} must be 'none' or "
                     "'transform'.")
  if mode == "qat" and keras_version == keras_env.KERAS_3:
    raise ValueError(
        "quantization='qat' needs tensorflow-model-optimization, which works "
        "on Keras 2 (tf_keras) models only, and this model is Keras 3 (loaded "
        "from model.keras). Use quantization='int8' (post-training, calibrated "
        "on the representative examples) instead.")


def _representative_samples(representative_data, config: QuantizerConfig,
                            input_specs: Mapping[str, tf.TensorSpec]
                            ) -> List[Dict[str, np.ndarray]]:
  """The batch-1 calibration examples of a mode that needs data, else []."""
  mode = config.quantization
  if mode not in DATA_MODES:
    return []
  if representative_data is None:
    raise ValueError(
        f"quantization={mode!r} needs representative examples, but no "
        "`examples` were given. Wire the Examples, or choose 'dynamic' or "
        "'float16', which need no data.")
  samples = _single_examples(representative_data, input_specs,
                             config.num_representative_samples)
  if not samples:
    raise ValueError(
        f"quantization={mode!r}: split {config.train_split!r} of "
        "`examples` gave 0 representative examples "
        f"(num_representative_samples={config.num_representative_samples}). "
        "Check the split's files or set `train_split` to a split with data.")
  return samples


def _describe(tflite_model: bytes, config: QuantizerConfig,
              preprocessing: str, packed) -> Dict[str, Any]:
  """The TFLite model's inputs and outputs and how to feed them (tflite_io.json)."""
  io = tflite_convert.describe_tflite(tflite_model)
  io.update(mode=config.quantization, int8_io_type=config.int8_io_type,
            preprocessing=preprocessing, label_key=config.label_key)
  if packed is not None:
    io["packed"] = packed.to_dict()
  return io


def _single_examples(data: Iterable[Any],
                     input_specs: Mapping[str, tf.TensorSpec],
                     limit: int) -> List[Dict[str, np.ndarray]]:
  """Splits batches of feature dicts into at most ``limit`` batch-1 dicts."""
  out: List[Dict[str, np.ndarray]] = []
  for item in data:
    features = item[0] if isinstance(item, (tuple, list)) else item
    arrays = {n: np.asarray(features[n]) for n in input_specs}
    batch = len(next(iter(arrays.values())))
    for i in range(batch):
      if len(out) >= limit:
        return out
      out.append({n: a[i:i + 1].astype(input_specs[n].dtype.as_numpy_dtype)
                  for n, a in arrays.items()})
    if len(out) >= limit:
      break
  return out


def _quantization_aware_model(model, config: QuantizerConfig, train_data,
                              input_sparsity: float):
  """A QAT clone of ``model``, fine-tuned; the input model is not touched.

  Only layers with a kernel (Conv, Dense, ...) that tfmot's default 8-bit
  registry supports are annotated: tfmot rejects others found in ordinary
  Trainer models (Rescaling; a Concatenate of many inputs under the
  pruning-preserving scheme). The converter still quantizes the unannotated
  layers to int8 with ranges calibrated on the representative examples.
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  tfmot = keras_env.import_tfmot()
  from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry  # pylint: disable=g-import-not-at-top,line-too-long

  tf_keras.utils.set_random_seed(config.seed)
  base = _without_pruning_wrappers(model)
  registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
  annotated_layers = []

  def annotate(layer):
    fresh = layer.__class__.from_config(layer.get_config())
    has_kernel = any(hasattr(layer, a) for a in ("kernel", "depthwise_kernel"))
    if has_kernel and registry.supports(layer):
      annotated_layers.append(layer.name)
      return tfmot.quantization.keras.quantize_annotate_layer(fresh)
    return fresh

  try:
    annotated = tf_keras.models.clone_model(base, clone_function=annotate)
  except (ValueError, TypeError, NotImplementedError) as e:
    raise ValueError(
        "quantization='qat' rebuilds the model layer by layer, which needs a "
        f"Sequential or functional Keras model; this one failed: {e}. Use "
        "'int8' (post-training) instead.") from e
  annotated.set_weights(base.get_weights())
  if not annotated_layers:
    raise ValueError("quantization='qat' found no Conv or Dense layer to "
                     "train quantization-aware. Use 'int8' instead.")

  preserve = input_sparsity >= PRUNE_PRESERVE_MIN_SPARSITY
  scheme = (tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
            if preserve else
            tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme())
  qat_model = tfmot.quantization.keras.quantize_apply(annotated, scheme)

  loss, loss_name = _loss_for(model, qat_model, train_data)
  train_loss = loss
  if config.distills:
    train_loss, train_data = _with_teacher(base, loss, train_data, config)
  qat_model.compile(
      optimizer=tf_keras.optimizers.Adam(config.learning_rate), loss=train_loss)
  logging.info("QAT: %d annotated layer(s) %s, scheme %s, %d steps, loss %s.",
               len(annotated_layers), annotated_layers,
               type(scheme).__name__, config.qat_steps, loss_name)
  history = qat_model.fit(train_data, steps_per_epoch=config.qat_steps,
                          epochs=1, verbose=0)
  losses = history.history.get("loss") or [float("nan")]
  _check_finite_qat(qat_model, losses[-1], config)
  stats = {
      "qat_scheme": "prune_preserve" if preserve else "default_8bit",
      "qat_loss": loss_name,
      "qat_final_loss": float(losses[-1]),
      "qat_annotated_layers": ",".join(annotated_layers),
  }
  if config.distills:
    stats.update(qat_distillation_weight=config.distillation_weight,
                 qat_distillation_temperature=config.distillation_temperature)
  return qat_model, stats


def _with_teacher(base, loss, train_data, config: QuantizerConfig):
  """(the distillation loss, train batches carrying the teacher's outputs).

  The teacher is a frozen copy of the input model (pruning wrappers
  stripped), run in inference mode; the input model itself is not touched.
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  if not isinstance(train_data, tf.data.Dataset):
    raise TypeError(
        f"`distillation_weight`={config.distillation_weight!r} needs the QAT "
        "train data as a tf.data.Dataset of (features, label) batches, got "
        f"{type(train_data).__name__}. Pass a Dataset, or set "
        "distillation_weight=0.")
  teacher = tf_keras.models.clone_model(base)
  teacher.set_weights(base.get_weights())
  return distillation.for_model(
      base, teacher, loss, train_data, weight=config.distillation_weight,
      temperature=config.distillation_temperature)


def _check_finite_qat(qat_model, loss: float, config: QuantizerConfig) -> None:
  """Raises if QAT left a NaN loss or weights: a NaN model is never converted.

  A loss on clipped probabilities can stay finite while the weights went NaN,
  so both are checked.
  """
  bad = [w.name for w in qat_model.weights if not np.isfinite(w.numpy()).all()]
  if np.isfinite(loss) and not bad:
    return
  raise ValueError(
      f"quantization='qat': the fine-tuning loss is {loss} and "
      f"{len(bad)} weight(s) are NaN or infinite ({bad[:3]}) after "
      f"`qat_steps`={config.qat_steps}; no model was written. Lower "
      f"`learning_rate` (now {config.learning_rate:g}), check the train split "
      "for NaN or infinite feature values, or use quantization='int8' (no "
      "fine-tuning).")


def _without_pruning_wrappers(model):
  """strip_pruning when the model still has tfmot pruning wrappers."""
  tfmot = keras_env.import_tfmot()
  from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # pylint: disable=g-import-not-at-top,line-too-long
  if any(isinstance(l, pruning_wrapper.PruneLowMagnitude) for l in model.layers):
    logging.info("Stripping pruning wrappers before QAT.")
    return tfmot.sparsity.keras.strip_pruning(model)
  return model


def _loss_for(original, qat_model, train_data) -> Tuple[Any, str]:
  """The original model's compiled loss, else a cross-entropy matching its output.

  A model loaded with ``compile=False`` (as the executor does) has no compiled
  loss. Then: the output's last dimension > 1 means a sparse categorical
  cross-entropy, 1 means a binary one; ``from_logits`` is False only when the
  outputs on a training batch are probabilities (in [0, 1], and summing to 1
  for several classes), e.g. a softmax or sigmoid head.
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  compiled = getattr(original, "loss", None)
  if compiled:
    return compiled, getattr(compiled, "name", None) or str(compiled)
  features, _ = next(iter(train_data))
  outputs = qat_model(features, training=False)
  if isinstance(outputs, (list, tuple, Mapping)):
    raise ValueError(
        "quantization='qat' without a compiled loss supports single-output "
        "classifiers; this model has several outputs. Use 'int8' instead.")
  outputs = np.asarray(outputs)
  in_unit = bool(np.all(outputs >= -1e-6) and np.all(outputs <= 1 + 1e-6))
  if outputs.shape[-1] == 1:
    return (tf_keras.losses.BinaryCrossentropy(from_logits=not in_unit),
            f"binary_crossentropy(from_logits={not in_unit})")
  sums_to_one = bool(np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))
  from_logits = not (in_unit and sums_to_one)
  return (tf_keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
          f"sparse_categorical_crossentropy(from_logits={from_logits})")


def example_data(file_patterns: Sequence[str], schema, model,
                 config: QuantizerConfig,
                 transform_output_dir: Optional[str] = None):
  """Representative and fine-tuning datasets from the raw Examples.

  Examples are decoded by the shared ExampleDecoder, so the model sees exactly
  what the Trainer fed it (the Transform's outputs when ``transform_output_dir``
  is set).

  Example:

      representative, train = example_data(patterns, schema, model, config)

  Args:
    file_patterns: the TFRecord files of ``config.train_split``.
    schema: the raw Examples' Schema proto (or None with a Transform).
    model: the tf_keras model (for its input names).
    config: the Quantizer's parameters.
    transform_output_dir: the TransformGraph's directory, if any.

  Returns:
    (representative, train): a dataset of single-example feature dicts,
    ``num_representative_samples`` of them drawn with a seeded shuffle; and for
    'qat' a repeated, shuffled (features, label) dataset of ``batch_size``
    batches (else None).

  Raises:
    DataError: the split is empty, features/label do not fit the model, or
      (for 'qat') examples have no label.
  """
  label_key = config.label_key or _any_raw_feature(schema, transform_output_dir)
  decoder = features_lib.ExampleDecoder(
      schema, label_key, features_lib.keras_input_specs(model),
      transform_output_dir=transform_output_dir)
  representative = decoder.dataset(
      file_patterns, batch_size=1, shuffle=True, seed=config.seed,
      split=config.train_split).map(lambda f, _: f).take(
          config.num_representative_samples)
  train = None
  if config.quantization == "qat":
    # An example without a label would train towards a made-up class: refuse
    # it in one line naming `label_key`, as the Pruner and the evaluator do.
    decoder.require_labels(file_patterns, config.train_split)
    train = decoder.dataset(file_patterns, batch_size=config.batch_size,
                            shuffle=True, seed=config.seed, num_epochs=None,
                            split=config.train_split)
  return representative, train


def _any_raw_feature(schema, transform_output_dir: Optional[str]) -> str:
  # Calibration needs no label, but the ExampleDecoder parses one: any raw
  # feature will do, since every raw feature is parsed anyway.
  if transform_output_dir:
    import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
    names = sorted(tft.TFTransformOutput(transform_output_dir)
                   .raw_feature_spec())
  else:
    names = [f.name for f in schema.feature] if schema is not None else []
  if not names:
    raise features_lib.DataError("The schema has no feature to parse.")
  return names[0]
