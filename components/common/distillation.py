"""Knowledge distillation for the fine-tuning of the Pruner and of the
Quantizer's QAT, for either Keras.

The input model, frozen, is the teacher. Its outputs ride along with the labels
(:func:`with_teacher` packs them into the label tensor of each train batch), and
:func:`distillation_loss` wraps the task loss:

    (1 - w) * task_loss(label, student) + w * T^2 * KL(teacher_T || student_T)

where ``x_T`` is ``softmax(logits(x) / T)``. Logits are taken as the task loss
says (``from_logits``) or, for a loss without that setting, as the output layer
says (softmax/sigmoid: probabilities, whose log is the logits up to a constant).
A one-unit (sigmoid/binary) output is treated as two classes ``[0, z]``.
Batches without teacher outputs (evaluation) get the task loss alone.

Pure TensorFlow: the same code serves tf_keras and Keras 3 (TensorFlow
backend) models; the backends compile the returned loss as any other.

Example:

    loss = distillation_loss(task, from_logits=False, weight=0.5,
                             temperature=2.0, label_spec=ds.element_spec[1])
    model.compile(optimizer="adam", loss=loss)
    model.fit(with_teacher(ds, teacher), ...)
"""

from typing import Any, Callable, Tuple

from absl import logging
import tensorflow as tf

from tfx_compression.components.common import keras_env

# Probabilities are floored here before their log is taken. Not 1e-7: a
# trained classifier puts most of its classes far below that (65% of the demo
# CNN's outputs), and a floor there flattens the tempered teacher (at T=4 its
# tail mass read 0.22 instead of 0.16) and gives the student's small outputs
# no gradient. 1e-30 keeps log-probabilities exact (they equal logits up to a
# constant) down to e^-69, and 1 / floor times any tempered KL gradient stays
# finite in float32.
_PROB_FLOOR = 1e-30
# 1 - p cannot be closer to 0 than this in float32 (a sigmoid output near 1).
_ONE_MINUS = 1e-7


def from_logits(loss, output_activation) -> bool:
  """Whether the model's outputs are logits: the loss's ``from_logits`` if it
  has one, else True unless the output layer applies softmax or sigmoid."""
  get_config = getattr(loss, "get_config", None)
  if callable(get_config):
    config = get_config() or {}
    if "from_logits" in config:
      return bool(config["from_logits"])
  return output_activation not in ("softmax", "sigmoid")


def _label_width(label_spec) -> int:
  shape = label_spec.shape
  if shape.rank is None:
    raise ValueError("Distillation needs the label's rank to be known; give "
                     "the train dataset a fixed label shape.")
  if shape.rank <= 1:
    return 1
  width = 1
  for dim in shape[1:]:
    if dim is None:
      raise ValueError(f"Distillation needs a fixed label shape, got {shape}.")
    width *= int(dim)
  return width


def _pack(label, teacher_out, width: int):
  # Static widths: the loss tells packed batches by their label width.
  classes = 1
  for dim in teacher_out.shape[1:]:
    classes *= int(dim)
  flat = tf.reshape(tf.cast(label, tf.float32), [-1, width])
  teacher_out = tf.reshape(tf.cast(teacher_out, tf.float32), [-1, classes])
  return tf.concat([flat, teacher_out], axis=-1)


def with_teacher(dataset: tf.data.Dataset, teacher) -> tf.data.Dataset:
  """(features, label) batches -> (features, label packed with the teacher's
  outputs), as :func:`distillation_loss` unpacks them."""
  width = _label_width(dataset.element_spec[1])

  def add(features, label):
    out = teacher(features, training=False)
    return features, _pack(label, tf.stop_gradient(out), width)

  return dataset.map(add)


def _as_logits(outputs, logits: bool):
  """[batch, classes] logits (a one-unit output as two classes [0, z])."""
  outputs = tf.cast(outputs, tf.float32)
  outputs = tf.reshape(outputs, [tf.shape(outputs)[0], -1])
  if outputs.shape[-1] == 1:
    if logits:
      z = outputs
    else:
      p = tf.clip_by_value(outputs, _PROB_FLOOR, 1 - _ONE_MINUS)
      z = tf.math.log(p) - tf.math.log(1 - p)
    return tf.concat([tf.zeros_like(z), z], axis=-1)
  if logits:
    return outputs
  return tf.math.log(tf.clip_by_value(outputs, _PROB_FLOOR, 1.0))


def kl_divergence(teacher_out, student_out, *, logits: bool,
                  temperature: float):
  """Mean over the batch of KL(teacher_T || student_T)."""
  t = _as_logits(teacher_out, logits) / temperature
  s = _as_logits(student_out, logits) / temperature
  log_p_t = tf.nn.log_softmax(t, axis=-1)
  log_p_s = tf.nn.log_softmax(s, axis=-1)
  return tf.reduce_mean(
      tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1))


def distillation_loss(task_loss: Callable[[Any, Any], Any], *,
                      from_logits: bool, weight: float, temperature: float,
                      label_spec) -> Callable[[Any, Any], Any]:
  """The fine-tuning loss with distillation, for ``model.compile(loss=...)``.

  Args:
    task_loss: the model's own loss (a callable Keras loss).
    from_logits: whether the model outputs logits (see :func:`from_logits`).
    weight: w in (0, 1].
    temperature: T > 0.
    label_spec: the train dataset's label ``tf.TensorSpec`` (unpacking).
  """
  width = _label_width(label_spec)
  label_shape = [int(d) for d in label_spec.shape[1:]]
  label_dtype = label_spec.dtype

  def loss(y_true, y_pred):
    packed = y_true.shape.rank == 2 and y_true.shape[-1] is not None and (
        y_true.shape[-1] > width)
    if not packed:  # Evaluation batches: no teacher outputs.
      return task_loss(y_true, y_pred)
    label = tf.reshape(y_true[:, :width], tf.concat(
        [tf.shape(y_true)[:1], tf.constant(label_shape, tf.int32)], 0))
    label = tf.cast(label, label_dtype)
    teacher_out = y_true[:, width:]
    task = task_loss(label, y_pred)
    kl = kl_divergence(teacher_out, y_pred, logits=from_logits,
                       temperature=temperature)
    return (1.0 - weight) * task + weight * temperature ** 2 * kl

  loss.__name__ = "distillation_loss"
  loss.distills = True
  return loss


def train_metrics(loss):
  """``metrics`` for the fine-tuning's compile: [] for a distillation loss
  (the model's own metrics cannot read packed labels; Keras 3 keeps a model's
  metrics through ``compile(metrics=None)``), else None (as before)."""
  return [] if getattr(loss, "distills", False) else None


def output_activation(model):
  """The name of the single output layer's activation, or None."""
  if len(model.outputs) != 1:
    return None
  activation = getattr(model.layers[-1], "activation", None)
  return getattr(activation, "__name__", None)


def for_model(model, teacher, loss, train_ds: tf.data.Dataset, *,
              weight: float, temperature: float) -> Tuple[Any, tf.data.Dataset]:
  """(the distillation loss, train batches with the teacher's outputs).

  Args:
    model: the input model (its output kind decides logits vs probabilities).
    teacher: a frozen copy of it, never wrapped by the pruning.
    loss: the task loss (object, function or Keras name).
    train_ds: (features, label) batches.
    weight, temperature: see :func:`distillation_loss`.
  """
  if len(model.outputs) != 1:
    raise ValueError(
        f"`distillation_weight`={weight!r}: distillation needs a model with one "
        f"output, this one has {len(model.outputs)}. Set distillation_weight=0.")
  if isinstance(loss, str):
    if keras_env.is_keras3(model):
      import keras  # pylint: disable=g-import-not-at-top
      loss = keras.losses.get(loss)
    else:
      import tf_keras  # pylint: disable=g-import-not-at-top
      loss = tf_keras.losses.get(loss)
  logits = from_logits(loss, output_activation(model))
  teacher.trainable = False
  logging.info("Distilling from the input model: weight %s, temperature %s, "
               "outputs taken as %s.", weight, temperature,
               "logits" if logits else "probabilities")
  wrapped = distillation_loss(loss, from_logits=logits, weight=weight,
                              temperature=temperature,
                              label_spec=train_ds.element_spec[1])
  return wrapped, with_teacher(train_ds, teacher)
