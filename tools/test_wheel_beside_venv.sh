#!/usr/bin/env bash
# make test-wheel: this package's wheel installed with plain `pip install` beside the
# TFX 1.16 of .venv/ (the default tested set), then tests/install and the demo e2e
# test run against the installed copy.
#
# .venv/ holds the project in editable mode, so the wheel goes into an overlay venv
# (OVERLAY, default /var/cache/tfx-compression/beside-1.16): a fresh venv of the same
# interpreter whose .pth file puts .venv's site-packages after its own. pip there sees
# TFX 1.16 and everything else as installed, installs only what is missing, and writes
# nothing into .venv/. The script fails if a package version visible there changes.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$REPO/.venv"
OVERLAY="${OVERLAY:-/var/cache/tfx-compression/beside-1.16}"
WORK="${OVERLAY}.work"
[ -x "$VENV/bin/python" ] || { echo "error: no $VENV: run make install first" >&2; exit 2; }

base="$(sed -n 's/^executable = //p' "$VENV/pyvenv.cfg")"
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
rm -rf "$OVERLAY" "$WORK"
mkdir -p "$WORK/dist" "$WORK/src" "$WORK/run"
"$base" -m venv "$OVERLAY"
echo "$site" > "$("$OVERLAY/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/tfx-1.16-venv.pth"

tar -C "$REPO" --exclude=__pycache__ -cf - pyproject.toml README.md components pipelines \
  tfx_compression | tar -C "$WORK/src" -xf -
tar -C "$REPO" --exclude=__pycache__ -cf - tests pyproject.toml | tar -C "$WORK/run" -xf -
"$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src"
wheel="$(ls "$WORK"/dist/tfx_compression-*.whl)"

"$OVERLAY/bin/python" -m pip freeze --all --exclude-editable | grep -v -e "^tfx-compression" -e "^#" | sort > "$WORK/before.txt"
"$OVERLAY/bin/pip" install "$wheel"
"$OVERLAY/bin/python" -m pip freeze --all --exclude-editable | grep -v -e "^tfx-compression" -e "^#" | sort > "$WORK/after.txt"
changed="$(comm -23 "$WORK/before.txt" "$WORK/after.txt")"
[ -z "$changed" ] || { echo "error: the install changed: $changed" >&2; exit 1; }
grep -qx "tfx==1.16.0" "$WORK/after.txt" || { echo "error: tfx is not 1.16.0" >&2; exit 1; }

cd "$WORK/run"
TFX_COMPRESSION_WHEEL="$wheel" TFX_COMPRESSION_EXPECT_TFX=1.16.0 \
  "$OVERLAY/bin/python" -m pytest -p no:warnings tests/install \
  tests/e2e/test_demo_pipeline.py "$@"
