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


NUM_CLASSES = 10  # the digits Trainer's softmax units (trainers/digits_trainer.py)
_BOM = b"\xef\xbb\xbf"


class CsvError(ValueError):
  """A CSV file CsvExampleGen would misread or the Trainer could not use."""


def check_csv_dir(data_dir: str, label_key: str = LABEL_KEY,
                  feature_keys=tuple(FEATURE_KEYS),
                  num_classes: int = NUM_CLASSES) -> int:
  """Reads every file CsvExampleGen will read in ``data_dir``; returns the row count.

  CsvExampleGen reads every file in the directory (its default pattern is ``*``),
  takes the columns from the header and fails, or reads wrong, far into the run
  on what is checked here. Files are read with Python's csv module and its
  default field size limit, as CsvExampleGen's decoder does.

  Raises:
    CsvError: the first problem, naming the file and the line, and what to do.
  """
  names = sorted(n for n in os.listdir(data_dir) if not n.startswith("."))
  rows, header_of = 0, None
  for name in names:
    path = os.path.join(data_dir, name)
    if os.path.isdir(path):
      raise CsvError(f"--data-dir {data_dir!r} holds a directory {name!r}; "
                     "CsvExampleGen reads every entry of --data-dir as a CSV "
                     "file. Move it out.")
    header, count = _check_csv_file(path, label_key, feature_keys, num_classes)
    if header_of is not None and header != header_of[1]:
      raise CsvError(f"{path}: its header differs from {header_of[0]}'s; every "
                     "CSV file in --data-dir must have the same columns in the "
                     "same order.")
    header_of = header_of or (path, header)
    rows += count
  return rows


def _check_csv_file(path, label_key, feature_keys, num_classes):
  """(header, data rows) of one file, or CsvError."""
  with open(path, "rb") as f:
    if f.read(3) == _BOM:
      raise CsvError(f"{path} starts with a UTF-8 byte-order mark, which would "
                     f"become part of the first column's name; save it as UTF-8 "
                     f"without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' {path}`).")
  with open(path, newline="", encoding="utf-8", errors="strict") as f:
    reader = csv.reader(f)
    line = 1
    try:
      header = next(reader, None)
      if not header or not any(h.strip() for h in header):
        raise CsvError(f"{path} is empty: it has no header line. Remove it from "
                       "--data-dir or write the header and rows.")
      if label_key not in header:
        raise CsvError(f"{path}: no `{label_key}` column (header: "
                       f"{_short(header)}); the demo's Trainer reads the class "
                       f"id from `{label_key}`. Rename the label column.")
      missing = [k for k in feature_keys if k not in header]
      if missing:
        raise CsvError(f"{path}: missing feature column(s) {_short(missing)}; "
                       f"the demo's Trainer reads {len(feature_keys)} columns "
                       f"{feature_keys[0]}..{feature_keys[-1]}.")
      label_at = header.index(label_key)
      count = 0
      for row in reader:
        line = reader.line_num
        if not row:
          continue  # a blank line holds nothing to check
        if len(row) != len(header):
          raise CsvError(f"{path}, line {line}: {len(row)} fields, the header "
                         f"has {len(header)}. Every row needs one value per "
                         "column.")
        _check_label(path, line, row[label_at], label_key, num_classes)
        count += 1
    except csv.Error as e:
      raise CsvError(f"{path}, line {reader.line_num}: {e} (Python's csv "
                     "module, which CsvExampleGen uses, refuses it). Shorten or "
                     "remove that field.") from e
    except UnicodeDecodeError as e:
      raise CsvError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                     "save it as UTF-8.") from e
  if count == 0:
    raise CsvError(f"{path} has a header and no rows; add rows or remove the "
                   "file from --data-dir.")
  return header, count


def _check_label(path, line, value, label_key, num_classes):
  text = value.strip()
  if not text:
    raise CsvError(f"{path}, line {line}: `{label_key}` is empty; every row "
                   f"needs a class id 0..{num_classes - 1}. Fill it in or "
                   "drop the row.")
  try:
    label = int(text)
  except ValueError:
    raise CsvError(f"{path}, line {line}: `{label_key}` is {value!r}, not a "
                   f"class id; use integers 0..{num_classes - 1} (map class "
                   "names to numbers first).") from None
  if not 0 <= label < num_classes:
    raise CsvError(f"{path}, line {line}: `{label_key}` is {label}, outside "
                   f"0..{num_classes - 1} (the Trainer has {num_classes} "
                   "classes). Fix the label or drop the row.")


def _short(items, limit: int = 5) -> str:
  items = list(items)
  text = ", ".join(items[:limit])
  return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")
