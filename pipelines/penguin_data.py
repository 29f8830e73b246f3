"""The penguin example's data, as TFX's penguin example expects it.

TFX's example reads ``penguins_processed.csv`` (species as 0/1/2, four numeric
features, rows with missing values dropped), which the tfx package does not ship. The
same table is made here from the Palmer penguins CSV shipped in the
``palmerpenguins`` package, so nothing is downloaded at run time.
"""

import csv
import io
import os

FEATURE_KEYS = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm",
                "body_mass_g"]
LABEL_KEY = "species"
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
_SOURCE_COLUMNS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                   "body_mass_g"]


def penguins_csv_text() -> str:
  import importlib.resources  # pylint: disable=g-import-not-at-top
  raw = (importlib.resources.files("palmerpenguins") / "data" /
         "penguins.csv").read_text()
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow([LABEL_KEY] + FEATURE_KEYS)
  for row in csv.DictReader(io.StringIO(raw)):
    values = [row[c] for c in _SOURCE_COLUMNS]
    if row["species"] not in SPECIES or any(v in ("", "NA") for v in values):
      continue
    writer.writerow([SPECIES.index(row["species"])] + [float(v) for v in values])
  return out.getvalue()


def ensure_penguins_csv(data_dir: str) -> str:
  """Writes ``penguins_processed.csv`` unless identical content is there."""
  text = penguins_csv_text()
  path = os.path.join(data_dir, "penguins_processed.csv")
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return data_dir
  os.makedirs(data_dir, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  return data_dir
