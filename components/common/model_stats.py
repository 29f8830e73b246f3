"""Sizes and sparsity of models, measured the same way everywhere."""

import gzip
import io
import os
from typing import Dict, Iterable, Iterator

import numpy as np


def dir_bytes(path: str) -> int:
  """Total bytes of the files under ``path`` (or of the file itself)."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      total += os.path.getsize(os.path.join(root, name))
  return total


def gzip_bytes(data: bytes) -> int:
  """Bytes after gzip at level 9: what compressed storage or transfer costs."""
  return len(gzip.compress(data, compresslevel=9, mtime=0))


class _CountingSink(io.RawIOBase):
  """A file that only counts what is written to it."""

  def __init__(self):
    super().__init__()
    self.count = 0

  def writable(self) -> bool:
    return True

  def write(self, data) -> int:
    self.count += len(data)
    return len(data)


def _streamed_gzip_bytes(chunks: Iterable) -> int:
  """``gzip_bytes`` of the chunks laid end to end, without joining them.

  The same deflate stream, so the same size, whatever the chunking; only one
  chunk is held at a time.
  """
  sink = _CountingSink()
  with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=9,
                     mtime=0) as out:
    for chunk in chunks:
      out.write(chunk)
  return sink.count


_READ_CHUNK = 1 << 20


def _file_chunks(paths: Iterable[str]) -> Iterator[bytes]:
  for file_path in paths:
    with open(file_path, "rb") as f:
      while chunk := f.read(_READ_CHUNK):
        yield chunk


def gzip_file_bytes(path: str) -> int:
  """gzip size of a file, or of all files under a directory, concatenated in order.

  Read and compressed a MiB at a time (a SavedModel's variables file can be
  hundreds of MB).
  """
  if os.path.isfile(path):
    return _streamed_gzip_bytes(_file_chunks([path]))
  paths = []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    paths.extend(os.path.join(root, name) for name in sorted(files))
  return _streamed_gzip_bytes(_file_chunks(paths))


def weights_gzip_bytes(weights: Iterable[np.ndarray]) -> int:
  """gzip size of the weight arrays alone: what pruning's zeros buy.

  The arrays are compressed one after the other, as ``gzip_bytes`` of their
  bytes laid end to end would, without holding that concatenation: on
  ResNet50 it is another 94 MB at the Pruner's peak. ``weights`` may be a
  generator (one variable's array alive at a time), e.g.
  :func:`model_weights`.
  """
  return _streamed_gzip_bytes(np.ascontiguousarray(w).reshape(-1).view(np.uint8)
                              for w in weights)


def model_weights(model) -> Iterator[np.ndarray]:
  """``model.get_weights()``'s arrays, one at a time (no list of them all)."""
  for variable in model.weights:
    yield variable.numpy()


def kernel_weights(model) -> list:
  """The weight matrices pruning acts on: kernels of Dense/Conv layers (not biases, BN)."""
  out = []
  for layer in _all_layers(model):
    for w in layer.weights:
      name = w.name.split("/")[-1]
      if ("kernel" in name) and len(w.shape) >= 2:
        out.append(w.numpy())
  return out


def _all_layers(model):
  for layer in model.layers:
    if hasattr(layer, "layers") and layer.layers:
      yield from _all_layers(layer)
    else:
      yield layer


def sparsity_stats(model) -> Dict[str, float]:
  """Parameter count, zero count, and sparsity of the prunable kernels.

  ``sparsity`` is zeros / size over kernel weights (Dense and Conv kernels),
  which is what pruning targets; ``overall_sparsity`` counts every weight.
  """
  all_weights = [w.numpy() for w in model.weights]
  params = int(sum(w.size for w in all_weights))
  zeros = int(sum(int(np.sum(w == 0)) for w in all_weights))
  kernels = kernel_weights(model)
  k_size = int(sum(k.size for k in kernels))
  k_zeros = int(sum(int(np.sum(k == 0)) for k in kernels))
  return {
      "param_count": params,
      "zero_count": zeros,
      "overall_sparsity": zeros / params if params else 0.0,
      "kernel_param_count": k_size,
      "kernel_zero_count": k_zeros,
      "sparsity": k_zeros / k_size if k_size else 0.0,
  }
