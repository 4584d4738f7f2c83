#!/usr/bin/env bash
# Create .venv/ in the repository root with the pinned mmdvit stack (see README.md, Quick start).
# Idempotent: a second run with an up-to-date .venv only re-checks the stamp and returns.
# mmcv 2.1.0 is compiled from its sdist with ops (patched for C++20) once per torch build and
# cached under $MMDVIT_CACHE (default ~/.cache/mmdvit), so later setups reuse the wheel.
# torch: MMDVIT_TORCH_BUILD=pypi (default) installs PyPI's build (with CUDA libraries; it runs
# on the CPU too); =cpu the CPU build from PyTorch's index ($TORCH_CPU_INDEX); =auto the CPU
# build when no NVIDIA GPU is found and that index can be reached, PyPI's otherwise. The default
# contacts PyPI only.
# Each step prints one line with its duration; pip's output is shown except the "Location ...
# is ignored" lines some pip configurations print for every package (tools/pip_noise.sed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMDVIT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE=${MMDVIT_CACHE:-$HOME/.cache/mmdvit}
TORCH_BUILD=${MMDVIT_TORCH_BUILD:-pypi}
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
STAMP=$VENV/.mmdvit-stamp
STAMP_KEY=$(cat "$ROOT/tools/setup_env.sh" "$ROOT/requirements/runtime.txt" "$ROOT/requirements/tests.txt" | sha1sum | cut -c1-12)

log() { printf '[setup] %s\n' "$*"; }

# step DESCRIPTION COMMAND...: run COMMAND, print "[setup] DESCRIPTION ... N s" and then its
# output less pip's noise, indented; on failure say so and return its status.
step() {
  local what=$1 start=$SECONDS out status=0
  shift
  printf '[setup] %s ... ' "$what"
  out=$(mktemp)
  "$@" > "$out" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    printf '%d s\n' $((SECONDS - start))
  else
    printf 'failed after %d s (exit status %d):\n' $((SECONDS - start)) "$status"
  fi
  sed -E -f "$ROOT/tools/pip_noise.sed" "$out" | sed 's/^/    /'
  rm -f "$out"
  return "$status"
}

has_nvidia_gpu() { command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; }

reachable() {
  "$VENV/bin/python" -c 'import sys, urllib.request as r; r.urlopen(sys.argv[1], timeout=15)' \
    "$1" > /dev/null 2>&1
}

# torch_index_args: pip arguments for the torch build chosen by MMDVIT_TORCH_BUILD (and a line
# saying which build and why).
torch_index_args() {
  case "$TORCH_BUILD" in
    pypi) log "torch: PyPI's build (MMDVIT_TORCH_BUILD=pypi)" >&2 ;;
    cpu)
      if ! reachable "$TORCH_CPU_INDEX/torch/"; then
        log "MMDVIT_TORCH_BUILD=cpu, but $TORCH_CPU_INDEX cannot be reached from here; set" \
          "MMDVIT_TORCH_BUILD=pypi (PyPI's build, with CUDA libraries) or fix the connection" >&2
        return 1
      fi
      echo "--index-url $TORCH_CPU_INDEX" ;;
    auto)
      if has_nvidia_gpu; then
        log "torch: PyPI's build (an NVIDIA GPU is present)" >&2
      elif reachable "$TORCH_CPU_INDEX/torch/"; then
        log "torch: the CPU build from $TORCH_CPU_INDEX (no NVIDIA GPU found)" >&2
        echo "--index-url $TORCH_CPU_INDEX"
      else
        log "torch: PyPI's build, with CUDA libraries (no NVIDIA GPU found, but PyTorch's CPU" \
          "index $TORCH_CPU_INDEX cannot be reached; PyPI has no CPU build for Linux)" >&2
      fi ;;
    *)
      log "MMDVIT_TORCH_BUILD=$TORCH_BUILD: use auto, cpu or pypi" >&2
      return 1 ;;
  esac
}

# build_mmcv WHEEL_DIR: compile mmcv with ops against the installed torch into WHEEL_DIR. (Run
# by step, where set -e does not apply: each command returns on failure.)
build_mmcv() {
  local tmp
  tmp=$(mktemp -d)
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
    "mmcv==$MMCV_VERSION" -d "$tmp" || return
  tar -xzf "$tmp"/mmcv-$MMCV_VERSION.tar.gz -C "$tmp" || return
  # torch >= 2.10 headers require C++20; mmcv appends -std=c++17 last, so patch setup.py.
  sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$MMCV_VERSION/setup.py" || return
  mkdir -p "$1" || return
  MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS=-g0 CXXFLAGS=-g0 \
    "${PIP[@]}" wheel -q --no-build-isolation --no-deps --no-cache-dir \
    "$tmp/mmcv-$MMCV_VERSION" -w "$tmp/wheels" || return
  cp "$tmp"/wheels/mmcv-$MMCV_VERSION-*.whl "$1/" || return
  rm -rf "$tmp"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ]; then
  log "environment up to date: $VENV"
  exit 0
fi
started=$SECONDS

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV" "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

index=$(torch_index_args)
read -r -a index_args <<< "$index"
step "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION" \
  "${PIP[@]}" install -q "${index_args[@]}" "torch==$TORCH_VERSION" \
  "torchvision==$TORCHVISION_VERSION"
step "installing build tools (setuptools, wheel, ninja)" \
  "${PIP[@]}" install -q setuptools==80.9.0 wheel ninja

# One mmcv wheel per torch build: PyPI's keeps the cache folder of earlier setups.
torch_local=$("$VENV/bin/python" -c "import torch; print(torch.__version__.partition('+')[2])")
WHEEL_DIR=$CACHE/wheels/torch-$TORCH_VERSION$([ "$torch_local" = cpu ] && echo +cpu || true)
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" \
    2>/dev/null; then
  wheel=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    step "building mmcv $MMCV_VERSION with ops (10 minutes on 2 cores; once per torch build)" \
      build_mmcv "$WHEEL_DIR"
    wheel=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  fi
  step "installing $wheel" "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
fi

step "installing OpenMMLab packages, timm and test tools" \
  "${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
  setuptools==80.9.0
step "installing mmdvit from $ROOT (editable)" \
  "${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

step "checking that everything imports" "$VENV/bin/python" - <<'PY'
import mmcv, mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, timm, torch  # noqa: F401
import mmdvit
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'timm {timm.__version__}')
PY
echo "$STAMP_KEY" > "$STAMP"
log "done in $((SECONDS - started)) s, $(du -sh "$VENV" | cut -f1) in $VENV; activate it with" \
  "'source $VENV/bin/activate'"
