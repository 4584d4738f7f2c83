#!/usr/bin/env bash
# Create .venv/ in the repository root with the pinned mmdvit stack (see README.md, Quick start).
# Idempotent: a second run with an up-to-date .venv only re-checks the stamp and returns.
# mmcv 2.1.0 is compiled from its sdist with ops (patched for C++20) once per torch version and
# cached under $MMDVIT_CACHE (default ~/.cache/mmdvit), so later setups reuse the wheel.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMDVIT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE=${MMDVIT_CACHE:-$HOME/.cache/mmdvit}
WHEEL_DIR=$CACHE/wheels/torch-$TORCH_VERSION
STAMP=$VENV/.mmdvit-stamp
STAMP_KEY=$(cat "$ROOT/tools/setup_env.sh" "$ROOT/requirements/runtime.txt" "$ROOT/requirements/tests.txt" | sha1sum | cut -c1-12)

log() { printf '[setup] %s\n' "$*"; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$STAMP_KEY" ]; then
  log "environment up to date: $VENV"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

log "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION and build tools"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  setuptools==80.9.0 wheel ninja

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" \
    2>/dev/null; then
  wheel=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  if [ -z "$wheel" ]; then
    log "building mmcv $MMCV_VERSION with ops for torch $TORCH_VERSION (about 6-10 minutes, once)"
    tmp=$(mktemp -d)
    "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$tmp"
    tar -xzf "$tmp"/mmcv-$MMCV_VERSION.tar.gz -C "$tmp"
    # torch >= 2.10 headers require C++20; mmcv appends -std=c++17 last, so patch setup.py.
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$WHEEL_DIR"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} CFLAGS=-g0 CXXFLAGS=-g0 \
      "${PIP[@]}" wheel -q --no-build-isolation --no-deps --no-cache-dir \
      "$tmp/mmcv-$MMCV_VERSION" -w "$tmp/wheels"
    cp "$tmp"/wheels/mmcv-$MMCV_VERSION-*.whl "$WHEEL_DIR/"
    rm -rf "$tmp"
    wheel=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-*.whl | head -n 1)
  fi
  log "installing $wheel"
  "${PIP[@]}" install -q --no-deps --force-reinstall "$wheel"
fi

log "installing OpenMMLab packages, timm and test tools"
"${PIP[@]}" install -q -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt" \
  setuptools==80.9.0
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"

"$VENV/bin/python" - <<'PY'
import mmcv, mmcv.ops, mmdet, mmengine, mmpretrain, mmseg, timm, torch  # noqa: F401
import mmdvit
print(f'[setup] torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}, '
      f'timm {timm.__version__}')
PY
echo "$STAMP_KEY" > "$STAMP"
log "done: activate with 'source $VENV/bin/activate'"
