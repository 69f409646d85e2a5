#!/usr/bin/env bash
# Triton Inference Server for the conformance suite (tests/conformance) and
# `bench.protocols --peer triton`: PyTriton's tritonserver in .triton-venv.
# Its Python backend stub links the system's libpython, so the venv is made from the system's
# Python 3.11 (not pyenv's), and it needs numpy<2. About 400 MB; nothing is downloaded later.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TRITON_SYSTEM_PYTHON:-/usr/bin/python3.11}
VENV=.triton-venv
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import pytriton, tritonclient" 2>/dev/null; then
  echo "ok    $VENV (already there)"
  exit 0
fi
if ! "$PY" -c "import ensurepip" 2>/dev/null; then  # Debian ships venv's pip separately
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check \
  'nvidia-pytriton>=0.7,<0.8' 'numpy<2' 'tritonclient[http,grpc]>=2.50,<3'
echo "ok    $VENV: $("$VENV/bin/python" -c 'import importlib.metadata as m; print("nvidia-pytriton", m.version("nvidia-pytriton"))')"
