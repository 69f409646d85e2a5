#!/usr/bin/env bash
# Triton Inference Server for the conformance suite (tests/conformance) and
# `bench.protocols --peer triton`: PyTriton's tritonserver in .triton-venv.
# Its Python backend stub links the system's libpython, so the venv is made from the system's
# Python 3.11 (not pyenv's), and it needs numpy<2. About 400 MB; nothing is downloaded later.
#   deploy/triton-venv.sh                     what the conformance suite needs
#   deploy/triton-venv.sh --with-tensorflow   and tensorflow-cpu, for Triton serving our
#                                             SavedModels in the benchmark (about 600 MB more)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TRITON_SYSTEM_PYTHON:-/usr/bin/python3.11}
VENV=.triton-venv
WANT="import pytriton, tritonclient"
[ "${1:-}" = "--with-tensorflow" ] && WANT="$WANT, tensorflow"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$WANT" 2>/dev/null; then
  echo "ok    $VENV (already there)"
  exit 0
fi
if ! "$PY" -c "import ensurepip" 2>/dev/null; then  # Debian ships venv's pip separately
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PACKAGES=('nvidia-pytriton>=0.7,<0.8' 'numpy<2' 'tritonclient[http,grpc]>=2.50,<3')
[ "${1:-}" = "--with-tensorflow" ] && PACKAGES+=('tensorflow-cpu>=2.16,<2.21')
"$VENV/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}"
echo "ok    $VENV: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("nvidia-pytriton", m.version("nvidia-pytriton"))')"
