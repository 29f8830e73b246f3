"""The demo's default data: scikit-learn's bundled digits set, written once as CSV."""

import csv
import io
import os

FEATURE_KEYS = [f"pixel_{i:02d}" for i in range(64)]
LABEL_KEY = "label"
CSV_NAME = "digits.csv"


def digits_csv_text() -> str:
  """The 1,797 digits as CSV text: 64 pixel columns (0..16) and the label."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(FEATURE_KEYS + [LABEL_KEY])
  for row, label in zip(digits.data.astype(int), digits.target):
    writer.writerow(list(row) + [int(label)])
  return out.getvalue()


def ensure_digits_csv(data_dir: str) -> str:
  """Writes ``digits.csv`` into ``data_dir`` unless the same content is there.

  The file is written only when missing or different, so that ExampleGen's input
  fingerprint stays the same and a re-run is served from cache.

  Returns:
    The directory, for CsvExampleGen's ``input_base``.
  """
  text = digits_csv_text()
  path = os.path.join(data_dir, CSV_NAME)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return data_dir
  os.makedirs(data_dir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)
  return data_dir
