"""Classification metrics from sufficient statistics, one definition for every gate.

The CompressionEvaluator (summed over the eval split in Beam) and the Pruner's search
(summed over the eval split step by step) both compute their metrics here, so a
threshold means the same thing in both places.

:func:`batch_stats` turns one batch of model outputs and labels into a
:class:`MetricStats` (confusion matrix, crossentropy sum, top-k hits, per-class score
histograms); stats of batches add up with :meth:`MetricStats.merge`, and
:func:`metrics_from_stats` reads accuracy, precision, recall, F1 (macro; class 1 for
binary models), AUC (one-vs-rest macro), top-k accuracy and crossentropy off the
total. Memory is fixed by the number of classes, never by the number of examples, and
every field is an integer, so the totals are identical whatever the order in which a
runner adds the batches.

Example:

    stats = batch_stats(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    metrics_from_stats(stats)["accuracy"]  # 0.5
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from tfx_compression.components.common import thresholds as thresholds_lib

# Score histogram resolution for AUC: bins of 0.001 on [0, 1]. Scores in the
# same bin count as ties, so the AUC is within about 1e-3 of the exact one.
AUC_BINS = 1000
# Crossentropy is summed in integer units of 1e-9 nats, so that adding batches
# in any order (as a multi-process runner does) gives exactly the same total.
XENT_UNITS_PER_NAT = 10**9
# Probabilities are clipped to [EPSILON, 1] before the log, as Keras does.
EPSILON = 1e-7


class MetricsError(ValueError):
  """Outputs and labels cannot be scored (e.g. string labels, count mismatch)."""


# ---------------------------------------------------------------------------
# Predictions -> sufficient statistics -> metrics.
# ---------------------------------------------------------------------------


PROBABILITIES = "probabilities"
LOGITS = "logits"


def _probability_rows(x: np.ndarray) -> np.ndarray:
  """Rows of [n, C] outputs that read as probabilities (see to_probabilities)."""
  with np.errstate(all="ignore"):
    in_range = np.all((x >= 0) & (x <= 1 + 1e-6), axis=1)
    if x.shape[1] == 1:
      return in_range
    return in_range & (np.abs(x.sum(axis=1) - 1.0) <= 0.01 + x.shape[1] / 512.0)


def _as_2d(outputs: Any) -> np.ndarray:
  x = np.asarray(outputs, dtype=np.float64)
  if x.ndim == 0:
    x = x.reshape(1, 1)
  return x.reshape(x.shape[0], -1)


def detect_output_kind(outputs: Any) -> str:
  """'probabilities' if every finite row reads as probabilities, else 'logits'.

  Decided once per model on a probe batch, so that every batch (and every
  worker) reads the model's outputs the same way. A row of C > 1 values reads
  as probabilities when its values lie in [0, 1] and sum to 1 within
  0.01 + C/512 (room for an 8-bit output's rounding); a single output unit
  when its value lies in [0, 1].

  Example:

      detect_output_kind(np.array([[2.0, -1.0]]))  # 'logits'
  """
  x = _as_2d(outputs)
  finite = np.all(np.isfinite(x), axis=1)
  return PROBABILITIES if np.all(_probability_rows(x[finite])) else LOGITS


def to_probabilities(outputs: Any, kind: Optional[str] = None
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Model outputs -> (class probabilities [n, C], rows read as logits [n]).

  Args:
    outputs: [n, C] scores, or [n] / [n, 1] for a binary model with one
      output unit (P(class 1) or its logit).
    kind: 'probabilities' (rows are renormalized to sum to 1), 'logits'
      (softmax, or sigmoid for one unit), or None to decide per row as
      detect_output_kind does per batch.

  Example:

      probs, logits = to_probabilities(np.array([[2.0, -1.0]]), "logits")
      # probs[0] is softmax([2, -1]); logits == [True]
  """
  x = _as_2d(outputs)
  if kind is None:
    is_prob = _probability_rows(x)
  elif kind in (PROBABILITIES, LOGITS):
    is_prob = np.full(x.shape[0], kind == PROBABILITIES)
  else:
    raise ValueError(f"kind={kind!r} is not 'probabilities', 'logits' or None.")
  with np.errstate(all="ignore"):
    if x.shape[1] == 1:
      p = x[:, 0]
      p = np.where(is_prob, np.clip(p, 0.0, 1.0), 0.5 * (1.0 + np.tanh(0.5 * p)))
      return np.stack([1.0 - p, p], axis=1), ~is_prob
    shifted = x - np.max(x, axis=1, keepdims=True)
    soft = np.exp(shifted)
    soft /= soft.sum(axis=1, keepdims=True)
    clipped = np.clip(x, 0.0, None)
    total = clipped.sum(axis=1, keepdims=True)
    probs = np.where(is_prob[:, None],
                     clipped / np.where(total > 0, total, 1.0), soft)
  return probs, ~is_prob


def _class_ids(labels: Any, n: int) -> Tuple[np.ndarray, np.ndarray]:
  """Labels -> (int64 class ids, valid mask); strings are an error."""
  y = np.asarray(labels)
  y = y.reshape(-1) if y.size == n else y
  if y.shape != (n,):
    raise MetricsError(
        f"Got {y.size} label values for {n} predictions: the label must be "
        "one class id per example.")
  if y.dtype.kind in "SUO":
    sample = y[0] if n else ""
    raise MetricsError(
        f"The label values are strings (e.g. {sample!r}); the evaluator needs "
        "integer class ids matching the model's output units. Map them to ids "
        "with a TransformGraph whose preprocessing_fn outputs the label.")
  if y.dtype.kind == "b":
    y = y.astype(np.int64)
  if y.dtype.kind == "f":
    with np.errstate(invalid="ignore"):
      valid = np.isfinite(y) & (y == np.round(y))
    ids = np.where(valid, y, -1).astype(np.int64)
    return ids, valid
  return y.astype(np.int64), np.ones(n, dtype=bool)


@dataclasses.dataclass
class MetricStats:
  """Sufficient statistics of a set of predictions; add them with merge()."""
  num_classes: int
  top_k: int
  count: int = 0          # rows counted in the metrics
  nonfinite: int = 0      # rows with a NaN or infinite output (not counted)
  bad_labels: int = 0     # rows whose label is not a class id in [0, C)
  missing_labels: int = 0  # rows with no label value at all (not counted)
  logit_rows: int = 0     # counted rows read as logits (softmax/sigmoid applied)
  top_k_correct: int = 0
  xent_units: int = 0     # sum of -log(p[label]) in 1e-9 nats
  confusion: Optional[np.ndarray] = None  # [C, C] int64, rows = true class
  auc_pos: Optional[np.ndarray] = None    # [C, AUC_BINS] scores of positives
  auc_neg: Optional[np.ndarray] = None    # [C, AUC_BINS] scores of negatives

  def __post_init__(self):
    c = self.num_classes
    if self.confusion is None:
      self.confusion = np.zeros((c, c), dtype=np.int64)
    if self.auc_pos is None:
      self.auc_pos = np.zeros((c, AUC_BINS), dtype=np.int64)
    if self.auc_neg is None:
      self.auc_neg = np.zeros((c, AUC_BINS), dtype=np.int64)

  @property
  def examples(self) -> int:
    """Every example seen, counted or not."""
    return self.count + self.nonfinite + self.bad_labels + self.missing_labels

  def merge(self, other: "MetricStats") -> "MetricStats":
    """The statistics of both sets of predictions (a new object)."""
    if other.num_classes != self.num_classes:
      raise MetricsError(
          f"The model produced {self.num_classes} classes on one batch and "
          f"{other.num_classes} on another; its output width must be fixed.")
    return MetricStats(
        num_classes=self.num_classes, top_k=self.top_k,
        count=self.count + other.count,
        nonfinite=self.nonfinite + other.nonfinite,
        bad_labels=self.bad_labels + other.bad_labels,
        missing_labels=self.missing_labels + other.missing_labels,
        logit_rows=self.logit_rows + other.logit_rows,
        top_k_correct=self.top_k_correct + other.top_k_correct,
        xent_units=self.xent_units + other.xent_units,
        confusion=self.confusion + other.confusion,
        auc_pos=self.auc_pos + other.auc_pos,
        auc_neg=self.auc_neg + other.auc_neg)

  def to_dict(self) -> Dict[str, Any]:
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    for key in ("confusion", "auc_pos", "auc_neg"):
      out[key] = out[key].tolist()
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "MetricStats":
    d = dict(d)
    for key in ("confusion", "auc_pos", "auc_neg"):
      d[key] = np.asarray(d[key], dtype=np.int64).reshape(
          (d["num_classes"], -1))
    return cls(**d)


def batch_stats(outputs: Any, labels: Any, top_k: int = 5,
                output_kind: Optional[str] = None,
                label_present: Any = None) -> MetricStats:
  """Sufficient statistics of one batch of model outputs.

  Args:
    outputs: [n, C] probabilities or logits, or [n] / [n, 1] for a binary
      model with one output unit (sigmoid probability or logit).
    labels: [n] integer class ids (floats holding integers are accepted).
    top_k: the k of top-k accuracy (capped at the number of classes).
    output_kind: 'probabilities' or 'logits' (see detect_output_kind); None
      decides per row.
    label_present: optional [n] booleans, False where the example has no
      label value at all (see features.ExampleDecoder.decode_with_presence).

  Returns:
    The batch's MetricStats. Rows with a NaN or infinite output, a label
    that is not a class id, or no label at all are counted apart and left
    out of the metrics.

  Raises:
    MetricsError: string labels, or a label count that does not match.

  Example:

      s = batch_stats(np.eye(3), np.array([0, 1, 1]))
      s.count, s.confusion[1, 2]  # (3, 1)
  """
  raw = np.asarray(outputs, dtype=np.float64)
  n = raw.shape[0] if raw.ndim else 1
  probs, logit_rows = to_probabilities(raw, output_kind)
  c = probs.shape[1]
  ids, label_ok = _class_ids(labels, n)
  label_ok &= (ids >= 0) & (ids < c)
  present = (np.ones(n, dtype=bool) if label_present is None
             else np.asarray(label_present, dtype=bool).reshape(n))
  finite = np.all(np.isfinite(raw.reshape(n, -1)), axis=1)
  rows = finite & label_ok & present
  p = probs[rows]
  y = ids[rows]
  m = int(rows.sum())
  stats = MetricStats(num_classes=c, top_k=int(top_k), count=m,
                      nonfinite=int((~finite & present).sum()),
                      bad_labels=int((finite & present & ~label_ok).sum()),
                      missing_labels=int((~present).sum()),
                      logit_rows=int((logit_rows & rows).sum()))
  if m == 0:
    return stats
  pred = np.argmax(p, axis=1)
  stats.confusion = np.bincount(y * c + pred, minlength=c * c).reshape(
      c, c).astype(np.int64)
  p_true = p[np.arange(m), y]
  # Rank of the true class = the other classes scored at least as high: a
  # tie counts against the model (the true class goes after every class tied
  # with it). So a model that scores every class alike has top-k accuracy 0
  # for k < C, where Keras' in_top_k (ties count as hits) would give it 1.0,
  # and the result does not depend on the order of the classes, as TFMA's
  # argpartition tie-break does.
  rank = np.sum(p >= p_true[:, None], axis=1) - 1
  stats.top_k_correct = int(np.sum(rank < min(int(top_k), c)))
  loss = -np.log(np.clip(p_true, EPSILON, 1.0))
  stats.xent_units = int(np.sum(np.round(loss * XENT_UNITS_PER_NAT).astype(
      np.int64)))
  bins = np.clip((p * AUC_BINS).astype(np.int64), 0, AUC_BINS - 1)
  flat = np.arange(c)[None, :] * AUC_BINS + bins
  positive = y[:, None] == np.arange(c)[None, :]
  stats.auc_pos = np.bincount(flat[positive], minlength=c * AUC_BINS).reshape(
      c, AUC_BINS).astype(np.int64)
  stats.auc_neg = np.bincount(flat[~positive], minlength=c * AUC_BINS).reshape(
      c, AUC_BINS).astype(np.int64)
  return stats


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float:
  """ROC AUC from score histograms of positives and negatives.

  The Mann-Whitney statistic: the share of (positive, negative) pairs where
  the positive scores in a higher bin, ties in a bin counting one half.
  NaN when there are no positives or no negatives.
  """
  pos = np.asarray(pos, dtype=np.float64)
  neg = np.asarray(neg, dtype=np.float64)
  n_pos, n_neg = pos.sum(), neg.sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  above = np.cumsum(pos[::-1])[::-1] - pos  # positives in strictly higher bins
  return float(np.sum(neg * (above + 0.5 * pos)) / (n_pos * n_neg))


def metrics_from_stats(stats: MetricStats) -> Dict[str, float]:
  """Every known metric (and ``count``) from sufficient statistics.

  Precision, recall and F1 are macro averages over the classes that occur in
  the labels or predictions (as scikit-learn's average='macro'), except for
  two-class models where they are those of class 1 (scikit-learn's
  average='binary' and Keras's Precision/Recall). AUC is one-vs-rest, macro
  over classes that have positives and negatives; class 1's for two classes.
  With no example counted, every metric is NaN.

  Example:

      metrics_from_stats(batch_stats(np.eye(2), np.array([0, 1])))["f1"]  # 1.0
  """
  nan = float("nan")
  out = {name: nan for name in thresholds_lib.METRICS}
  out["count"] = stats.count
  if stats.count == 0:
    return out
  cm = stats.confusion.astype(np.float64)
  tp = np.diag(cm)
  support = cm.sum(axis=1)
  predicted = cm.sum(axis=0)
  fp, fn = predicted - tp, support - tp
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(predicted > 0, tp / predicted, 0.0)
    recall = np.where(support > 0, tp / support, 0.0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
  if stats.num_classes == 2:
    classes = np.array([1])
    auc = auc_from_histograms(stats.auc_pos[1], stats.auc_neg[1])
  else:
    classes = np.flatnonzero((support + predicted) > 0)
    aucs = [auc_from_histograms(stats.auc_pos[k], stats.auc_neg[k])
            for k in range(stats.num_classes)]
    aucs = [a for a in aucs if not math.isnan(a)]
    auc = float(np.mean(aucs)) if aucs else nan
  out.update(
      accuracy=float(tp.sum() / stats.count),
      precision=float(np.mean(precision[classes])),
      recall=float(np.mean(recall[classes])),
      f1=float(np.mean(f1[classes])),
      auc=auc,
      top_k_accuracy=stats.top_k_correct / stats.count,
      crossentropy=stats.xent_units / XENT_UNITS_PER_NAT / stats.count)
  return out


