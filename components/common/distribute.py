"""Which ``tf.distribute`` strategy the fine-tuning runs under: the ``distribution`` parameter.

The Pruner's fine-tuning and the Quantizer's QAT run their clone, compile and
``fit`` inside :func:`scope`, as a TFX Trainer module does with
``tf.distribute.MirroredStrategy().scope()`` (tfx/examples/penguin). Both
Kerases follow the strategy of the scope their model is built in: tf_keras and
Keras 3 (TensorFlow backend) split each global batch across the replicas and
sum the gradients, so a step sees the same examples as on one device.

``distribution`` values:

- ``'auto'`` (default): MultiWorkerMirroredStrategy when ``TF_CONFIG`` names
  several workers (the step runs on a Kubeflow / Vertex AI worker pool),
  MirroredStrategy when several GPUs are visible, else no strategy (one
  device, exactly as without this module).
- ``'mirrored'``: MirroredStrategy over the visible GPUs, or over the logical
  CPU devices when there is no GPU (tests split the CPU in two).
- ``'multi_worker'``: MultiWorkerMirroredStrategy (cluster from ``TF_CONFIG``).
- ``'off'``: no strategy.

Example:

    with distribute.scope(config.distribution) as strategy:
      model = clone(model); model.compile(...); model.fit(...)
"""

import contextlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Union

from absl import logging
import tensorflow as tf

AUTO = "auto"
MIRRORED = "mirrored"
MULTI_WORKER = "multi_worker"
OFF = "off"
DISTRIBUTIONS = (AUTO, MIRRORED, MULTI_WORKER, OFF)
PARAMETER = "distribution"
TF_CONFIG_ENV = "TF_CONFIG"
# Roles of a TF_CONFIG cluster that run the training loop ('master' is the
# legacy name of the chief, as TFX's Trainer executor reads it).
_WORKER_ROLES = ("chief", "master", "worker")


def check_distribution(value: Any, parameter: str = PARAMETER) -> str:
  """``value`` normalised ('Mirrored ' -> 'mirrored'); raises on a bad one.

  Raises:
    TypeError: not a string.
    ValueError: not one of :data:`DISTRIBUTIONS`.
  """
  if not isinstance(value, str):
    raise TypeError(f"`{parameter}` must be a string, one of {DISTRIBUTIONS}, "
                    f"got {type(value).__name__} {value!r}.")
  normalised = value.strip().lower().replace("-", "_")
  if normalised not in DISTRIBUTIONS:
    raise ValueError(
        f"`{parameter}`={value!r} is not one of {DISTRIBUTIONS}. Use 'auto' "
        "(several workers from TF_CONFIG, else several GPUs, else one device), "
        "'mirrored' (every visible GPU), 'multi_worker' (the TF_CONFIG "
        "cluster) or 'off' (one device).")
  return normalised


def _parse_tf_config(tf_config: Union[None, str, Mapping[str, Any]]
                    ) -> Mapping[str, Any]:
  if tf_config is None:
    tf_config = os.environ.get(TF_CONFIG_ENV)
  if not tf_config:
    return {}
  if isinstance(tf_config, Mapping):
    return tf_config
  try:
    parsed = json.loads(tf_config)
  except ValueError as e:
    raise ValueError(f"The {TF_CONFIG_ENV} environment variable is not JSON "
                     f"({e}): {tf_config[:200]!r}. Fix or unset it.") from None
  if not isinstance(parsed, Mapping):
    raise ValueError(f"The {TF_CONFIG_ENV} environment variable must be a JSON "
                     f"object with a 'cluster', got {tf_config[:200]!r}.")
  return parsed


def worker_count(tf_config: Union[None, str, Mapping[str, Any]] = None) -> int:
  """Tasks of ``TF_CONFIG``'s cluster that train (chief, master, workers); 0 if none.

  Args:
    tf_config: the JSON text or its dict; None reads the environment.
  """
  cluster = _parse_tf_config(tf_config).get("cluster") or {}
  return sum(len(cluster.get(role) or ()) for role in _WORKER_ROLES)


def is_chief(tf_config: Union[None, str, Mapping[str, Any]] = None) -> bool:
  """True unless ``TF_CONFIG`` makes this process a non-chief task.

  The rule of TFX's Trainer executor: without a cluster every process is the
  chief; in one, the 'chief' task or 'master' 0 (else 'worker' 0 when the
  cluster has no chief, as MultiWorkerMirroredStrategy does).
  """
  parsed = _parse_tf_config(tf_config)
  cluster = parsed.get("cluster") or {}
  if not cluster:
    return True
  task = parsed.get("task") or {}
  kind, index = task.get("type"), int(task.get("index", 0))
  if kind == "chief" or (kind == "master" and index == 0):
    return True
  has_chief = bool(cluster.get("chief") or cluster.get("master"))
  return kind == "worker" and index == 0 and not has_chief


def choose(distribution: str = AUTO, *,
           tf_config: Union[None, str, Mapping[str, Any]] = None,
           gpu_count: Optional[int] = None) -> str:
  """The strategy ``distribution`` means here: 'mirrored', 'multi_worker' or 'off'.

  Pure but for what it reads when not given: ``TF_CONFIG`` and the visible GPUs.

  Example:

      choose("auto", tf_config={"cluster": {"worker": ["a:1", "b:1"]}})  # 'multi_worker'

  Raises:
    TypeError, ValueError: a bad ``distribution`` (see :func:`check_distribution`).
  """
  distribution = check_distribution(distribution)
  if distribution != AUTO:
    return distribution
  if worker_count(tf_config) > 1:
    return MULTI_WORKER
  if gpu_count is None:
    gpu_count = len(tf.config.list_logical_devices("GPU"))
  return MIRRORED if gpu_count > 1 else OFF


# One strategy of each kind per process, made on first use. A second
# MirroredStrategy in the same process (the Pruner then the Quantizer under
# LocalDagRunner) reuses the first one's collective instance keys: its first
# all-reduce failed here with "Shape mismatch in the collective instance".
# MultiWorkerMirroredStrategy may only be made once per process anyway.
_STRATEGIES: Dict[str, tf.distribute.Strategy] = {}


def make_strategy(choice: str) -> Optional[tf.distribute.Strategy]:
  """The process's strategy for a :func:`choose` result (None for 'off')."""
  if choice == OFF:
    return None
  if choice not in (MIRRORED, MULTI_WORKER):
    raise ValueError(f"`choice`={choice!r} is not one of "
                     f"{(MIRRORED, MULTI_WORKER, OFF)}; pass what choose() "
                     "returns.")
  if choice not in _STRATEGIES:
    if choice == MULTI_WORKER:
      _STRATEGIES[choice] = tf.distribute.MultiWorkerMirroredStrategy()
    else:
      gpus = tf.config.list_logical_devices("GPU")
      # MirroredStrategy() alone takes only /cpu:0 without GPUs; logical CPU
      # devices exist only when someone split the CPU on purpose.
      devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
      _STRATEGIES[choice] = tf.distribute.MirroredStrategy(devices=devices)
  return _STRATEGIES[choice]


@contextlib.contextmanager
def scope(distribution: str = AUTO):
  """Runs the block under the strategy ``distribution`` chooses; yields it (or None).

  Inside a scope the caller already entered (any strategy), nothing changes:
  the caller's strategy is used and yielded, so a user can give their own
  ``tf.distribute`` strategy by calling the pure functions inside its scope.

  Build, compile and fit the models inside the block. Models made there keep
  their strategy after the block (``fit`` and ``evaluate`` still distribute).
  """
  if tf.distribute.has_strategy():
    yield tf.distribute.get_strategy()
    return
  choice = choose(distribution)
  strategy = make_strategy(choice)
  if strategy is None:
    yield None
    return
  logging.info("Fine-tuning under %s over %d replica(s) (distribution=%r).",
               type(strategy).__name__, strategy.num_replicas_in_sync,
               distribution)
  with strategy.scope():
    yield strategy
