"""One measuring code path for both sides of the benchmark.

The hand-written reference and our pipeline hand their TFLite flatbuffers to the
same functions here, fed the same held-out examples (the pipeline's eval split):

* accuracy: each eval example fed alone (batch 1) to the TFLite interpreter
  (LiteRT when installed, else ``tf.lite.Interpreter``);
* size: raw bytes of the flatbuffer and bytes after gzip -9
  (:func:`tfx_compression.components.common.model_stats.gzip_bytes`);
* latency: ``invoke()`` of one example on one thread, median over many
  examples after a warm-up. The models are timed in rounds, one model after the
  other, so that a burst of load on a shared machine hits every model alike
  while each model runs warm within its turn.

Example:

    data = load_split(["/pipeline_root/CsvExampleGen/examples/1/Split-eval/*"])
    models = {"float": TFLiteModel(float_bytes),
              "int8": TFLiteModel(int8_bytes)}
    table = measure(models, data)
    table["int8"].latency_us, table["int8"].gzip_bytes
"""

import dataclasses
import os
import statistics
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfx_compression.components.common import model_stats
from tfx_compression.components.common import tflite_runtime
from tfx_compression.components.common import tflite_packing

FEATURE_KEYS = [f"pixel_{i:02d}" for i in range(64)]
LABEL_KEY = "label"
# Latency: ROUNDS turns per model, each WARMUP untimed then PER_ROUND timed
# invokes on successive eval examples.
ROUNDS = 5
WARMUP = 30
PER_ROUND = 200


@dataclasses.dataclass
class EvalData:
  """Held-out examples as arrays: {feature: float32 [n, 1]} and int labels."""
  features: Dict[str, np.ndarray]
  labels: np.ndarray

  def __len__(self) -> int:
    return int(self.labels.shape[0])


def _feature_spec():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # What CsvExampleGen writes for the digits CSV: one int64 per column.
  spec = {k: tf.io.FixedLenFeature([1], tf.int64) for k in FEATURE_KEYS}
  spec[LABEL_KEY] = tf.io.FixedLenFeature([1], tf.int64)
  return spec


def list_records(patterns: Sequence[str]) -> List[str]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = []
  for pattern in patterns:
    files.extend(sorted(tf.io.gfile.glob(pattern)))
  if not files:
    raise FileNotFoundError(f"No TFRecord file matches {list(patterns)}.")
  return files


def record_dataset(patterns: Sequence[str]):
  """tf.data of the serialized examples (gzip detected from the file names)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = list_records(patterns)
  return tf.data.TFRecordDataset(
      files, compression_type="GZIP" if files[0].endswith(".gz") else "")


def parse_batch(serialized):
  """Serialized tf.Examples -> ({pixel: float32 [b, 1]}, int64 label [b])."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  parsed = tf.io.parse_example(serialized, _feature_spec())
  label = tf.reshape(parsed.pop(LABEL_KEY), [-1])
  return {k: tf.cast(v, tf.float32) for k, v in parsed.items()}, label


def load_split(patterns: Sequence[str]) -> EvalData:
  """Every example of a split, in file order, as arrays."""
  ds = record_dataset(patterns).batch(100000).map(parse_batch)
  feats, labels = {}, []
  for f, y in ds:
    for k, v in f.items():
      feats.setdefault(k, []).append(v.numpy())
    labels.append(y.numpy())
  return EvalData({k: np.concatenate(v) for k, v in feats.items()},
                  np.concatenate(labels))


class TFLiteModel:
  """A TFLite flatbuffer in a one-thread interpreter, fed by feature name."""

  def __init__(self, content: bytes, name: str = "model",
               packed: Optional[Mapping] = None):
    self.name = name
    self.content = bytes(content)
    self.interpreter = tflite_runtime.make_interpreter(
        model_content=self.content, num_threads=1)
    it = self.interpreter
    it.allocate_tensors()
    runner = it.get_signature_runner()
    # The signature names the inputs after the Keras inputs (the features);
    # its tensor indices are the main graph's, so set_tensor can use them.
    self.inputs = dict(runner.get_input_details())
    outputs = list(runner.get_output_details().values())
    if len(outputs) != 1:
      raise ValueError(f"{name}: expected one output, got {len(outputs)}.")
    self.output = outputs[0]
    # One input that is not a feature: the features packed side by side, as
    # ``packed`` says (ours: tflite_io.json's entry) or in FEATURE_KEYS order.
    self.packed = None
    if len(self.inputs) == 1 and next(iter(self.inputs)) not in FEATURE_KEYS:
      self.packed = packed or {"features": FEATURE_KEYS,
                               "widths": [1] * len(FEATURE_KEYS),
                               "dtype": "float32"}
      width = int(np.prod(next(iter(self.inputs.values()))["shape"]))
      if width != sum(self.packed["widths"]):
        raise ValueError(f"{name}: packed input of {width} values, "
                         f"{sum(self.packed['widths'])} to pack.")
    missing = sorted(set(self.inputs) - set(FEATURE_KEYS))
    if missing and self.packed is None:
      raise ValueError(f"{name}: TFLite inputs {missing} are not features.")

  def set_example(self, data: EvalData, i: int) -> None:
    for name, d in self.inputs.items():
      if self.packed is not None:
        value = tflite_packing.pack({n: data.features[n][i:i + 1]
                              for n in self.packed["features"]}, self.packed)
      else:
        value = data.features[name][i:i + 1]
      value = value.reshape(d["shape"])
      scale, zero = d["quantization"]
      if np.dtype(d["dtype"]).kind in "iu" and scale:
        info = np.iinfo(d["dtype"])
        value = np.clip(np.round(value / scale + zero), info.min, info.max)
      self.interpreter.set_tensor(d["index"], value.astype(d["dtype"]))

  def invoke(self) -> None:
    self.interpreter.invoke()

  def scores(self) -> np.ndarray:
    out = self.interpreter.get_tensor(self.output["index"]).astype(np.float64)
    scale, zero = self.output["quantization"]
    if np.dtype(self.output["dtype"]).kind in "iu" and scale:
      out = (out - zero) * scale
    return out.reshape(-1)

  @property
  def raw_bytes(self) -> int:
    return len(self.content)

  @property
  def gzip_bytes(self) -> int:
    return model_stats.gzip_bytes(self.content)


def accuracy(model: TFLiteModel, data: EvalData) -> float:
  """Share of examples whose highest score is the label (batch 1 each)."""
  hits = 0
  for i in range(len(data)):
    model.set_example(data, i)
    model.invoke()
    hits += int(np.argmax(model.scores()) == data.labels[i])
  return hits / len(data)


def latencies(models: Mapping[str, TFLiteModel], data: EvalData,
              rounds: int = ROUNDS, warmup: int = WARMUP,
              per_round: int = PER_ROUND) -> Dict[str, float]:
  """Median seconds of one ``invoke()`` per example, for each model.

  Inputs are set before the clock starts; only ``invoke`` is timed.
  """
  times = {name: [] for name in models}
  n = len(data)
  cursor = 0
  for _ in range(rounds):
    for name, model in models.items():
      for j in range(warmup + per_round):
        model.set_example(data, (cursor + j) % n)
        start = time.perf_counter()
        model.invoke()
        elapsed = time.perf_counter() - start
        if j >= warmup:
          times[name].append(elapsed)
    cursor += per_round
  return {name: statistics.median(t) for name, t in times.items()}


@dataclasses.dataclass
class Measurement:
  accuracy: float
  raw_bytes: int
  gzip_bytes: int
  latency_us: float

  def to_dict(self) -> Dict[str, float]:
    return dataclasses.asdict(self)


def measure(models: Mapping[str, TFLiteModel], data: EvalData,
            **latency_kwargs) -> Dict[str, Measurement]:
  """Accuracy, sizes and latency of every model, measured the same way."""
  lat = latencies(models, data, **latency_kwargs)
  return {name: Measurement(accuracy(m, data), m.raw_bytes, m.gzip_bytes,
                            lat[name] * 1e6)
          for name, m in models.items()}


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
  if a is None or b is None or not b:
    return None
  return float(a) / float(b)


def split_files(examples_uri: str, split: str) -> Tuple[str, ...]:
  """TFRecord patterns of an ExampleGen split (TFX's Split-<name> layout)."""
  return (os.path.join(examples_uri, f"Split-{split}", "*"),)
