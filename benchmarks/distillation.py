"""Distillation against plain fine-tuning: the Pruner on the demo CNN (#20).

    .venv/bin/python -m benchmarks.distillation                       # 90%, seeds 0,1,2
    .venv/bin/python -m benchmarks.distillation --weights 0,0.5 --temperature 4
    .venv/bin/python -m benchmarks.distillation --structure channels --sparsity 0.85
    .venv/bin/python -m benchmarks.distillation --qat --weights 0,0.5,0.9   # QAT
    .venv/bin/python -m benchmarks.distillation --augment mixup,noise --weights 0,0.5

The demo CNN (``tests/fixtures.train_digits_model``: the digits Trainer's
architecture, trained ``--train-steps`` steps in batches of 64 on the first two
thirds of ``sklearn.datasets.load_digits``) is pruned unstructured to
``--sparsity`` with the Pruner's defaults (300 steps, polynomial schedule,
Adam 1e-3), once per distillation weight, on the same data order per seed; the
accuracy is on the last third (599 examples). One JSON line per run, then the
mean accuracy points lost per weight. Per seed, one more line says what the
teacher knows about the fine-tuning examples: its accuracy on them and its mean
top probability, at T=1 and at ``--temperature`` (a teacher that is one-hot on
them adds little to their labels).

With ``--qat`` the fine-tuning compared is the Quantizer's QAT (its defaults:
200 steps, Adam 1e-4) of the plainly pruned model, which is then the teacher;
the accuracy is the int8 TFLite model's, and the loss is counted against the
pruned Keras model (the QAT input).

With ``--augment`` (``mixup``, ``noise``, ``shift``; several, comma-separated)
the distillation term is computed on augmented copies of each train batch, which
the teacher has not memorised, while the task term stays on the real labelled
batch: each step fine-tunes on the batch and its augmented copy (2 x 32 rows),
loss = (1 - w) * task(real rows) + w * T^2 * KL(teacher || student)(augmented
rows). ``mixup``: x * l + x[perm] * (1 - l), l ~ U(0, 1) per example; ``noise``:
Gaussian, ``--noise-std`` pixel levels (of 0..16), clipped; ``shift``: each
8x8 image moved by -1..1 pixels on each axis, zero-filled. Weight 0 is plain
fine-tuning (no augmentation), the reference of the same run.

Issue #20's goal: distillation recovers at least half of the points plain
fine-tuning (weight 0) loses, and is never worse by more than one eval example.
"""

import argparse
import json
import statistics
import time

import numpy as np
import tensorflow as tf

from tests import fixtures
from tfx_compression.components.common import distillation
from tfx_compression.components.pruner import pruning
from tfx_compression.components.pruner import strategy as strategy_lib
from tfx_compression.components.pruner.config import PrunerConfig


def _data(seed: int):
  x, y = fixtures.digits_arrays()
  n = 2 * len(y) // 3
  feats = lambda a: {k: a[:, i:i + 1].astype(np.float32)
                     for i, k in enumerate(fixtures.FEATURES)}
  train = tf.data.Dataset.from_tensor_slices((feats(x[:n]), y[:n])).shuffle(
      2048, seed=seed).batch(32)
  evaluation = tf.data.Dataset.from_tensor_slices(
      (feats(x[n:]), y[n:])).batch(128)
  return train, evaluation, len(y) - n


def _teacher_on_train(model, temperature: float) -> dict:
  """The teacher on the fine-tuning examples: accuracy, mean top probability."""
  x, y = fixtures.digits_arrays()
  n = 2 * len(y) // 3
  probs = model.predict({k: x[:n, i:i + 1].astype(np.float32)
                         for i, k in enumerate(fixtures.FEATURES)},
                        batch_size=256, verbose=0)
  logp = np.log(np.maximum(probs, 1e-30)) / temperature
  tempered = np.exp(logp - logp.max(axis=1, keepdims=True))
  tempered /= tempered.sum(axis=1, keepdims=True)
  return dict(teacher_train_accuracy=round(float(
                  (probs.argmax(axis=1) == y[:n]).mean()), 4),
              teacher_train_top_probability=round(float(
                  probs.max(axis=1).mean()), 4),
              teacher_train_top_probability_at_t=round(float(
                  tempered.max(axis=1).mean()), 4))


def _tflite_accuracy(flatbuffer: bytes, io: dict) -> float:
  """Accuracy of a TFLite model on the eval third, one example at a time."""
  from tfx_compression.components.common import tflite_runtime  # pylint: disable=g-import-not-at-top
  x, y = fixtures.digits_arrays()
  n = 2 * len(y) // 3
  runner = tflite_runtime.make_interpreter(
      model_content=flatbuffer, num_threads=1).get_signature_runner(
          io["signature_key"])
  inputs = {i["name"]: i for i in io["inputs"]}
  (out,) = io["outputs"]
  correct = 0
  for row in range(n, len(y)):
    feed = {}
    for i, name in enumerate(fixtures.FEATURES):
      v, spec = x[row:row + 1, i:i + 1].astype(np.float32), inputs[name]
      if spec["dtype"] != "float32":
        q = spec["quantization"]
        v = np.round(v / q["scale"] + q["zero_point"])
      feed[name] = v.astype(spec["dtype"])
    correct += int(np.argmax(runner(**feed)[out["name"]]) == y[row])
  return correct / (len(y) - n)


def _qat_runs(args, seed: int, model, train, evaluation, n_eval, lost) -> None:
  """Prunes plainly, then QAT of the pruned model with each weight."""
  from tfx_compression.components.quantizer import quantization  # pylint: disable=g-import-not-at-top
  from tfx_compression.components.quantizer.config import QuantizerConfig  # pylint: disable=g-import-not-at-top
  r = pruning.prune_model(model, train, PrunerConfig(
      target_sparsity=args.sparsity, seed=seed,
      sparsity_structure=args.structure), eval_ds=evaluation)
  base = r.metrics["accuracy"]
  for weight in [float(w) for w in args.weights.split(",")]:
    start = time.time()
    q = quantization.quantize(
        r.model, QuantizerConfig(quantization="qat", label_key="label",
                                 seed=seed, distillation_weight=weight,
                                 distillation_temperature=args.temperature),
        representative_data=train.unbatch().batch(1),
        train_data=train.repeat(), measure_float=False)
    acc = _tflite_accuracy(q.tflite_model, q.io)
    lost.setdefault(weight, []).append(100 * (base - acc))
    print(json.dumps(dict(
        seed=seed, stage="qat", weight=weight, temperature=args.temperature,
        pruned_keras=round(base, 4), int8_tflite=round(acc, 4),
        examples_lost=round((base - acc) * n_eval),
        sparsity=round(q.stats["sparsity"], 4),
        seconds=round(time.time() - start, 1))), flush=True)


# Distillation on augmented inputs (--augment): a loss and a dataset hook.


def _augment(kind: str, x, seed, noise_std: float):
  """Augmented [batch, 64] pixel rows (0..16), stateless-seeded per batch."""
  n = tf.shape(x)[0]
  if kind == "noise":
    noise = tf.random.stateless_normal(tf.shape(x), seed, stddev=noise_std)
    return tf.clip_by_value(x + noise, 0.0, 16.0)
  if kind == "mixup":
    lam = tf.random.stateless_uniform([n, 1], seed)
    perm = tf.argsort(tf.random.stateless_uniform([n], seed + [0, 1]))
    return lam * x + (1.0 - lam) * tf.gather(x, perm)
  if kind == "shift":
    images = tf.pad(tf.reshape(x, [-1, 8, 8]), [[0, 0], [1, 1], [1, 1]])
    shifted = tf.stack([images[:, dy:dy + 8, dx:dx + 8]
                        for dy in range(3) for dx in range(3)], axis=1)
    pick = tf.random.stateless_uniform([n], seed, 0, 9, dtype=tf.int32)
    return tf.reshape(tf.gather(shifted, pick, batch_dims=1), [-1, 64])
  raise ValueError(f"--augment {kind!r}: use mixup, noise or shift.")


def _with_augmented_teacher(train, teacher, kind: str, seed: int,
                            noise_std: float):
  """(batch + its augmented copy, labels [label, teacher on the copy, real?])."""
  keys = list(fixtures.FEATURES)

  def add(index, features, label):
    x = tf.concat([tf.cast(features[k], tf.float32) for k in keys], axis=1)
    xa = _augment(kind, x, tf.stack([tf.cast(seed, tf.int64), index]),
                  noise_std)
    augmented = {k: xa[:, i:i + 1] for i, k in enumerate(keys)}
    t = tf.stop_gradient(teacher(augmented, training=False))
    rows = tf.shape(x)[0]
    label = tf.cast(tf.reshape(label, [-1, 1]), tf.float32)
    real = tf.concat([label, tf.zeros_like(t), tf.ones([rows, 1])], axis=1)
    aug = tf.concat([tf.zeros_like(label), t, tf.zeros([rows, 1])], axis=1)
    both = {k: tf.concat([features[k], augmented[k]], axis=0) for k in keys}
    return both, tf.concat([real, aug], axis=0)

  return train.repeat().enumerate().map(lambda i, b: add(i, *b))


def _augmented_loss(task_loss, weight: float, temperature: float):
  """Task loss on the real rows, T^2 * KL on the augmented rows."""

  def loss(y_true, y_pred):
    if y_true.shape.rank != 2 or y_true.shape[-1] in (None, 1):
      return task_loss(y_true, y_pred)  # Evaluation batches.
    real = y_true[:, -1] > 0.5
    label = tf.cast(tf.boolean_mask(y_true[:, 0], real), tf.int64)
    task = task_loss(label, tf.boolean_mask(y_pred, real))
    kl = distillation.kl_divergence(
        tf.boolean_mask(y_true[:, 1:-1], ~real),
        tf.boolean_mask(y_pred, ~real), logits=False, temperature=temperature)
    return (1.0 - weight) * task + weight * temperature ** 2 * kl

  return loss


def _augmented_runs(args, seed, model, train, evaluation, n_eval, lost):
  """Each --augment kind at each weight > 0 (weight 0 ran plainly)."""
  backend = strategy_lib.backend(model)
  task_loss, _ = backend.resolve_loss(model)
  for kind in args.augment.split(","):
    for weight in [float(w) for w in args.weights.split(",") if float(w) > 0]:
      start = time.time()
      teacher = backend.clone_model(model)
      teacher.trainable = False
      r = pruning.prune_model(
          model, _with_augmented_teacher(train, teacher, kind, seed,
                                         args.noise_std),
          PrunerConfig(target_sparsity=args.sparsity, seed=seed,
                       sparsity_structure=args.structure),
          eval_ds=evaluation,
          loss=_augmented_loss(task_loss, weight, args.temperature))
      base, pruned = r.baseline_metrics["accuracy"], r.metrics["accuracy"]
      lost.setdefault(f"{kind} {weight}", []).append(100 * (base - pruned))
      print(json.dumps(dict(
          seed=seed, augment=kind, weight=weight,
          temperature=args.temperature, baseline=round(base, 4),
          pruned=round(pruned, 4), examples_lost=round((base - pruned) * n_eval),
          sparsity=round(r.stats["sparsity"], 4),
          seconds=round(time.time() - start, 1))), flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--sparsity", type=float, default=0.9)
  p.add_argument("--structure", default="unstructured",
                 help="sparsity_structure: unstructured, channels or M:N")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--train-steps", type=int, default=600)
  p.add_argument("--weights", default="0,0.5,0.9")
  p.add_argument("--temperature", type=float, default=2.0)
  p.add_argument("--qat", action="store_true",
                 help="compare the Quantizer's QAT of the pruned model instead")
  p.add_argument("--augment", default="",
                 help="distil on augmented inputs: mixup, noise, shift "
                      "(comma-separated); weight 0 stays plain")
  p.add_argument("--noise-std", type=float, default=2.0)
  args = p.parse_args()
  if args.qat and args.augment:
    p.error("--augment is for the Pruner's fine-tuning, not with --qat.")
  lost = {}
  for seed in [int(s) for s in args.seeds.split(",")]:
    model = fixtures.train_digits_model(steps=args.train_steps, seed=seed)
    train, evaluation, n_eval = _data(seed)
    print(json.dumps(dict(seed=seed, temperature=args.temperature,
                          **_teacher_on_train(model, args.temperature))),
          flush=True)
    if args.qat:
      _qat_runs(args, seed, model, train, evaluation, n_eval, lost)
      continue
    if args.augment:
      if 0.0 in [float(w) for w in args.weights.split(",")]:
        _plain_runs(args, seed, model, train, evaluation, n_eval, lost, [0.0])
      _augmented_runs(args, seed, model, train, evaluation, n_eval, lost)
      continue
    _plain_runs(args, seed, model, train, evaluation, n_eval, lost,
                [float(w) for w in args.weights.split(",")])
  for weight, points in lost.items():
    print(f"weight {weight}: {statistics.mean(points):.2f} accuracy points "
          f"lost on average ({', '.join(f'{p:.2f}' for p in points)})")


def _plain_runs(args, seed, model, train, evaluation, n_eval, lost, weights):
  """The Pruner as it is, at each distillation weight."""
  for weight in weights:
    start = time.time()
    r = pruning.prune_model(model, train, PrunerConfig(
        target_sparsity=args.sparsity, seed=seed,
        sparsity_structure=args.structure,
        distillation_weight=weight,
        distillation_temperature=args.temperature), eval_ds=evaluation)
    base, pruned = r.baseline_metrics["accuracy"], r.metrics["accuracy"]
    lost.setdefault(weight, []).append(100 * (base - pruned))
    print(json.dumps(dict(
        seed=seed, weight=weight, temperature=args.temperature,
        baseline=round(base, 4), pruned=round(pruned, 4),
        examples_lost=round((base - pruned) * n_eval),
        sparsity=round(r.stats["sparsity"], 4),
        seconds=round(time.time() - start, 1))), flush=True)


if __name__ == "__main__":
  main()
