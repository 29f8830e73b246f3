"""TFX's own penguin Keras module, with the one change compression needs.

``preprocessing_fn`` and ``run_fn`` are TFX's, as shipped in
``tfx/examples/penguin/penguin_utils_keras.py``. The one change: TFX's ``run_fn``
ends with ``tf.saved_model.save(model, ...)``, which writes no Keras metadata, so the
model cannot be loaded back as Keras for fine-tuning (pruning, quantization-aware
training). Here that call is routed to ``model.save(..., save_format='tf',
signatures=...)``, which writes the same SavedModel (same signatures, loadable by
plain TensorFlow, TF Serving and the stock Evaluator) plus the Keras metadata.
"""

import contextlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf
from tfx.examples.penguin import penguin_utils_keras as _penguin

preprocessing_fn = _penguin.preprocessing_fn


@contextlib.contextmanager
def _keras_saved_model():
  original = tf.saved_model.save

  def save(obj, export_dir, signatures=None, options=None):
    if hasattr(obj, "save") and hasattr(obj, "layers"):
      obj.save(export_dir, save_format="tf", signatures=signatures,
               options=options)
    else:
      original(obj, export_dir, signatures=signatures, options=options)

  tf.saved_model.save = save
  try:
    yield
  finally:
    tf.saved_model.save = original


def run_fn(fn_args):
  """TFX's penguin ``run_fn``, saving a Keras SavedModel."""
  with _keras_saved_model():
    _penguin.run_fn(fn_args)
