#!/usr/bin/env bash
# make test-current: this package on the current stack (TFX 1.21, TensorFlow 2.21,
# CPython 3.13), installed the way a user installs it.
#
# TFX 1.21's ml-metadata and tensorflow-data-validation wheels need glibc >= 2.39, so
# the tests run in a Debian 13 root (glibc 2.41) made with debootstrap, kept outside
# the repository and reused:
#   1. the root: debootstrap trixie, then g++ and python3-dev (pyfarmhash builds from
#      source);
#   2. "your TFX 1.21 environment": a venv with tfx 1.21, tfmot, tf-keras, tensorboard,
#      ai-edge-litert and pytest, versions from constraints-tfx1.21-py3.13.txt
#      (rebuilt only when that file changes);
#   3. this package's wheel, built from the working tree and installed with plain
#      `pip install WHEEL` (dependencies resolved by pip); the script fails if that
#      changes the version of any package already installed (TFX stays 1.21);
#   4. the tests, from a directory that holds only tests/ (so the installed package
#      is what they import): unit tests, tests/install, the demo and penguin e2e tests;
#   5. the evaluator's Beam job on a 2-process dask.distributed cluster (Beam 2.77's
#      DaskRunner), in a copy of that venv with `pip install 'WHEEL[dask]'` (the
#      `dask` extra resolved by pip), so the venv of steps 2-4 stays as a TFX 1.21
#      team has it.
# Prints how long each part took.
#
# Needs root (debootstrap, chroot, mount) and Debian's package registry and PyPI.
# Variables: CURRENT_ROOT (where the root lives), DEBIAN_MIRROR, CURRENT_TESTS (which
# parts: any of unit install demo penguin dask), PYTEST_ARGS.
# /proc and /dev are bind-mounted into the root while it runs and unmounted on exit.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${CURRENT_ROOT:-/var/cache/tfx-compression/trixie}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PARTS="${CURRENT_TESTS:-unit install demo penguin dask}"
PYTEST_ARGS="${PYTEST_ARGS:-}"
CONSTRAINTS="$REPO/constraints-tfx1.21-py3.13.txt"
VENV=/opt/tfx-current          # inside the root
DASK_VENV=/opt/tfx-current-dask  # a copy of VENV with the `dask` extra
# What a team on TFX 1.21 has before installing us (versions from CONSTRAINTS).
BASE_PACKAGES=("tfx==1.21.0" tensorflow-model-optimization tf-keras tensorboard
               ai-edge-litert pytest)

TIMES=()
die() { echo "error: $*" >&2; exit 2; }
log() { echo "== test-current: $*"; }
timed() {  # timed LABEL CMD...: runs CMD (set -e holds inside it), records its time
  local label="$1" t0=$SECONDS
  shift
  "$@"
  TIMES+=("$(printf '%-48s %5d s' "$label" $((SECONDS - t0)))")
}
timed_test() {  # timed_test LABEL CMD...: as timed, but a failure is returned, not fatal
  local label="$1" t0=$SECONDS code=0
  shift
  "$@" || code=$?
  TIMES+=("$(printf '%-48s %5d s%s' "$label" $((SECONDS - t0)) "$([ $code = 0 ] || echo '  FAILED')")")
  return $code
}
report_times() {
  [ ${#TIMES[@]} -eq 0 ] && return
  echo "== test-current: time per part"
  printf '   %s\n' "${TIMES[@]}"
}

# Runs a command in the root, with only the environment it needs (the host's pip
# configuration points at paths that do not exist there).
in_root() {
  local -a env=(PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8
                PIP_CERT=/etc/ssl/certs/ca-certificates.crt
                PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
                DEBIAN_FRONTEND=noninteractive CUDA_VISIBLE_DEVICES=)
  local v
  for v in PIP_INDEX_URL HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
    [ -n "${!v:-}" ] && env+=("$v=${!v}")
  done
  chroot "$ROOT" /usr/bin/env -i "${env[@]}" "$@"
}

unmount_root() {
  local d
  for d in dev proc; do
    if mountpoint -q "$ROOT/$d"; then umount "$ROOT/$d" || umount -l "$ROOT/$d"; fi
  done
}

finish() {
  local code=$?
  unmount_root
  report_times
  exit $code
}

make_root() {
  if [ -e "$ROOT/.debootstrap-done" ]; then
    log "reusing the Debian 13 root at $ROOT"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq && apt-get install -y -qq debootstrap
  fi
  local partial="$ROOT.partial" r d
  # Never delete through a bind mount of the host's /dev or /proc.
  for r in "$partial" "$ROOT"; do
    for d in dev proc; do
      if mountpoint -q "$r/$d"; then umount "$r/$d" || umount -l "$r/$d"; fi
    done
  done
  rm -rf --one-file-system "$partial" "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap trixie into $ROOT (about 1-3 minutes)"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    trixie "$partial" "$MIRROR" > "$(dirname "$ROOT")/debootstrap.log"
  touch "$partial/.debootstrap-done"
  mv "$partial" "$ROOT"
}

prepare_root() {
  # The machine's resolver and CA bundle (which may hold a proxy's CA), every run.
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  mountpoint -q "$ROOT/proc" || mount --bind /proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  # What earlier runs left in the root's /tmp (a run that was killed before
  # its tests' clean-up, or the demo's own TFX leftovers): the root is ours.
  find "$ROOT/tmp" -mindepth 1 -delete
  if [ ! -e "$ROOT/.compilers-done" ]; then
    in_root apt-get update -qq
    in_root apt-get install -y -qq --no-install-recommends g++ python3-dev > /dev/null
    touch "$ROOT/.compilers-done"
  fi
}

make_venv() {
  local stamp="$ROOT$VENV/.constraints.sha256" want
  want="$(sha256sum < "$CONSTRAINTS" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    log "reusing the TFX 1.21 venv $VENV"
    return
  fi
  log "creating the TFX 1.21 venv $VENV (${BASE_PACKAGES[*]})"
  rm -rf "$ROOT$VENV"
  cp "$CONSTRAINTS" "$ROOT/opt/constraints-current.txt"
  in_root python3 -m venv "$VENV"
  in_root "$VENV/bin/pip" install -q -c /opt/constraints-current.txt "${BASE_PACKAGES[@]}"
  echo "$want" > "$stamp"
}

# The working tree's package files, copied into the root.
copy_sources() {
  rm -rf "$ROOT/opt/src" "$ROOT/opt/dist" "$ROOT/opt/run"
  mkdir -p "$ROOT/opt/src" "$ROOT/opt/dist" "$ROOT/opt/run"
  tar -C "$REPO" --exclude=__pycache__ -cf - pyproject.toml README.md components \
    pipelines tfx_compression | tar -C "$ROOT/opt/src" -xf -
  # Only tests/ and the pytest settings: the tests import the installed package.
  tar -C "$REPO" --exclude=__pycache__ -cf - tests pyproject.toml \
    | tar -C "$ROOT/opt/run" -xf -
}

install_wheel() {
  in_root "$VENV/bin/pip" wheel -q --no-deps --no-build-isolation -w /opt/dist /opt/src
  WHEEL="$(cd "$ROOT/opt/dist" && ls tfx_compression-*.whl)"
  in_root "$VENV/bin/pip" uninstall -y -q tfx-compression 2>/dev/null || true
  in_root "$VENV/bin/pip" freeze --exclude-editable > "$ROOT/opt/dist/before.txt"
  log "pip install $WHEEL (plain: pip resolves its dependencies)"
  in_root "$VENV/bin/pip" install "/opt/dist/$WHEEL"
  in_root "$VENV/bin/pip" freeze --exclude-editable > "$ROOT/opt/dist/after.txt"
  # Every package that was there keeps its version; new ones are listed.
  local changed added
  changed="$(comm -23 <(sort "$ROOT/opt/dist/before.txt") <(sort "$ROOT/opt/dist/after.txt"))"
  added="$(comm -13 <(sort "$ROOT/opt/dist/before.txt") <(sort "$ROOT/opt/dist/after.txt"))"
  echo "   added by the install: $(echo $added)"
  if [ -n "$changed" ]; then
    die "installing the wheel replaced what the environment had: $(echo $changed)"
  fi
  grep -qx "tfx==1.21.0" "$ROOT/opt/dist/after.txt" || die "tfx is not 1.21.0 after the install"
  in_root "$VENV/bin/pip" check
}

run_pytest() {  # run_pytest PATH...
  # shellcheck disable=SC2086
  in_root /bin/sh -c "cd /opt/run && TFX_COMPRESSION_WHEEL=/opt/dist/$WHEEL \
    TFX_COMPRESSION_EXPECT_TFX=1.21.0 $VENV/bin/python -m pytest -p no:warnings $PYTEST_ARGS $*"
}

# The `dask` extra in a copy of the venv (a venv's own python finds its packages
# from where it lies, so the copy works from its new path), then the Dask test.
run_dask() {
  rm -rf "${ROOT:?}$DASK_VENV"
  cp -a "$ROOT$VENV" "$ROOT$DASK_VENV"
  in_root "$DASK_VENV/bin/python" -m pip install -q "/opt/dist/$WHEEL[dask]"
  in_root "$DASK_VENV/bin/python" -m pip check
  # shellcheck disable=SC2086
  in_root /bin/sh -c "cd /opt/run && $DASK_VENV/bin/python -m pytest -p no:warnings \
    $PYTEST_ARGS tests/components/test_compression_evaluator_dask.py"
}

main() {
  [ "$(id -u)" = 0 ] || die "make test-current needs root (debootstrap, chroot, mount); run it as root or in CI."
  [ -f "$CONSTRAINTS" ] || die "missing $CONSTRAINTS"
  mkdir -p "$(dirname "$ROOT")"
  # One run at a time per root: two would unmount each other's /proc.
  exec 9> "$ROOT.lock"
  flock -n 9 || die "another make test-current is using $ROOT ($ROOT.lock)"
  trap finish EXIT

  timed "Debian 13 root (debootstrap)" make_root
  timed "root: resolver, mounts, g++ python3-dev" prepare_root
  timed "venv: TFX 1.21 and its stack" make_venv
  copy_sources
  timed "wheel: build, plain pip install, check" install_wheel
  # Every part runs; the script fails at the end if one did.
  local part failed=()
  for part in $PARTS; do
    case "$part" in
      unit) timed_test "tests/unit" run_pytest tests/unit || failed+=(unit) ;;
      install) timed_test "tests/install" run_pytest tests/install || failed+=(install) ;;
      demo) timed_test "demo e2e (tests/e2e/test_demo_pipeline.py)" \
              run_pytest tests/e2e/test_demo_pipeline.py || failed+=(demo) ;;
      # TFX 1.21 brings no kfp on Python 3.13: compiling for Kubeflow is not part
      # of this set.
      penguin) timed_test "penguin e2e (tests/e2e/test_penguin_pipeline.py)" \
                 run_pytest tests/e2e/test_penguin_pipeline.py \
                 --deselect tests/e2e/test_penguin_pipeline.py::test_compiles_for_kubeflow \
                 || failed+=(penguin) ;;
      dask) timed_test "dask runner (tests/components/test_compression_evaluator_dask.py)" \
              run_dask || failed+=(dask) ;;
      *) die "CURRENT_TESTS: unknown part '$part' (allowed: unit install demo penguin dask)" ;;
    esac
  done
  [ ${#failed[@]} -eq 0 ] || { echo "error: test-current: failed: ${failed[*]}" >&2; return 1; }
}

main "$@"
