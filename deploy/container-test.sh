#!/usr/bin/env bash
# Build the image from the Dockerfile, run it, wait for readiness, check that its start printed
# nothing but the model and address lines, POST a digit to /predict, check the answer and that
# the server runs as a non-root user, then stop it.
# Uses docker when an engine answers, else podman (set up by ../shared/tools/container-env.sh
# where that script exists). Exit 0 = passed, 1 = failed, 3 = no container tooling here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
IMAGE=${IMAGE:-cnn-serve:test}
PORT=${PORT:-18080}
GRPC_PORT=${GRPC_PORT:-18081}
NAME=cnn-serve-test-$$
SETUP=../shared/tools/container-env.sh

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  ENGINE=(docker); BUILD_ARGS=(); URL_PORT=$PORT
  RUN_NET=(-p "127.0.0.1:${PORT}:8000" -p "127.0.0.1:${GRPC_PORT}:8001")
else
  if [ -x "$SETUP" ]; then  # installs podman and makes the local base image (idempotent)
    "$SETUP" >/dev/null 2>&1 || echo "!!! $SETUP failed" >&2
  fi
  if ! command -v podman >/dev/null; then
    echo "!!! container test SKIPPED: no docker engine and podman could not be set up" >&2
    exit 3
  fi
  ENGINE=(podman --storage-driver vfs --runtime runc)
  # vfs keeps a full copy of the tree per layer: a from-scratch build needs ~25 GB
  store=/var/lib/containers; [ -d "$store" ] || store=/
  free_gb=$(df -Pk "$store" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "${free_gb:-0}" -lt 30 ]; then
    echo "!!! container test SKIPPED: only ${free_gb:-?} GB free for podman's vfs storage" >&2
    exit 3
  fi
  if ! "${ENGINE[@]}" image exists localhost/bookworm-python; then
    echo "!!! container test SKIPPED: no local base image (run $SETUP)" >&2
    exit 3
  fi
  BASE=localhost/bookworm-python
  if "${ENGINE[@]}" image exists "$BASE-755"; then
    BASE=$BASE-755
  elif ! "${ENGINE[@]}" run --rm --user 65534 "$BASE" /bin/true >/dev/null 2>&1; then
    # that base was imported from a 0700 directory: non-root users cannot even reach /bin.
    # Layers cannot change "/" itself, so re-import it once with / at 0755.
    echo "== making $BASE-755 (the local base's / is not readable by non-root users)"
    cid=$("${ENGINE[@]}" create "$BASE" /bin/true)
    "${ENGINE[@]}" export "$cid" | "$PY" -c "
import sys, tarfile
src = tarfile.open(fileobj=sys.stdin.buffer, mode='r|')
dst = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')
for member in src:
    if member.name in ('.', './', ''):
        member.mode = 0o755
    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
dst.close()" | "${ENGINE[@]}" import \
      --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
      --change "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt" \
      --change "ENV PIP_BREAK_SYSTEM_PACKAGES=1" - "$BASE-755" >/dev/null
    "${ENGINE[@]}" rm "$cid" >/dev/null
    "${ENGINE[@]}" run --rm --user 65534 "$BASE-755" /bin/true \
      || { echo "FAIL: could not make a usable base image" >&2; exit 1; }
    BASE=$BASE-755
  fi
  BUILD_ARGS=(--network host --build-arg "BASE_IMAGE=$BASE")
  RUN_NET=(--network host -e "CNN_SERVE_PORT=${PORT}" -e "CNN_SERVE_GRPC_PORT=${GRPC_PORT}")
  URL_PORT=$PORT
fi

echo "== building $IMAGE with ${ENGINE[0]}"
start=$(date +%s)
"${ENGINE[@]}" build "${BUILD_ARGS[@]}" -t "$IMAGE" . >/tmp/cnn-serve-build.log 2>&1 \
  || { tail -40 /tmp/cnn-serve-build.log; echo "FAIL: image build" >&2; exit 1; }
echo "   built in $(( $(date +%s) - start )) s; size: $("${ENGINE[@]}" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"

cleanup() { "${ENGINE[@]}" rm -f "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${ENGINE[@]}" run -d --name "$NAME" "${RUN_NET[@]}" "$IMAGE" >/dev/null
echo "== waiting for http://127.0.0.1:${URL_PORT}/health/ready"
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:${URL_PORT}/health/ready" >/dev/null 2>&1; then ready=1; break; fi
  [ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$NAME")" = "true" ] || break
  sleep 1
done
if [ -z "${ready:-}" ]; then
  "${ENGINE[@]}" logs "$NAME" 2>&1 | tail -30; echo "FAIL: not ready (exited or 120 s)" >&2
  exit 1
fi

# a normal start says which models are ready and where it listens, nothing else
"${ENGINE[@]}" logs "$NAME" 2>&1 | "$PY" -c "
import re, sys
lines = sys.stdin.read().splitlines()
start = lines[:next(i for i, line in enumerate(lines) if 'running on http://' in line) + 1]
wanted = re.compile(r'\"message\": ?\"(model \\S+ v\\d+ ready on |gRPC on |Uvicorn running on )')
noise = [line for line in start if not wanted.search(line)]
sys.exit(f'start-up noise: {noise[:3]}' if noise else 0)" \
  || { echo "FAIL: the start printed more than the models and the addresses" >&2; exit 1; }
echo "   start-up output: the model lines and the addresses only"

digit=$(mktemp --suffix=.png)
PYTHONPATH=. "$PY" -c "
from tests.service.handwriting import draw_digit
draw_digit(7, canvas=(240, 180), box=(90, 30, 120)).save('$digit')"
answer=$(curl -fsS -F "file=@${digit};type=image/png" "http://127.0.0.1:${URL_PORT}/predict")
label=$(echo "$answer" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['predictions'][0]['outputs']['digit']['label'])")
echo "   /predict answered digit=$label"
[ "$label" = "7" ] || { echo "FAIL: expected 7, got: $answer" >&2; exit 1; }

# gRPC: health (as a Kubernetes gRPC probe asks) and an inference through tritonclient.grpc
grpc_label=$(PYTHONPATH=. "$PY" -c "
import grpc, numpy as np, tritonclient.grpc as g
from grpc_health.v1 import health_pb2, health_pb2_grpc
with grpc.insecure_channel('127.0.0.1:${GRPC_PORT}') as channel:
    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
assert status.status == health_pb2.HealthCheckResponse.SERVING, status
tensor = g.InferInput('image_bytes', [1], 'BYTES')
tensor.set_data_from_numpy(np.array([open('$digit', 'rb').read()], dtype=object))
reply = g.InferenceServerClient('127.0.0.1:${GRPC_PORT}').infer('digit_odd', [tensor])
print(int(reply.as_numpy('digit')[0].argmax()))")
echo "   gRPC health SERVING; ModelInfer answered digit=$grpc_label"
[ "$grpc_label" = "7" ] || { echo "FAIL: gRPC answered: $grpc_label" >&2; exit 1; }

# the explorer page and its assets are in the installed package; Grad-CAM runs model.keras
curl -fsS "http://127.0.0.1:${URL_PORT}/" | grep -q 'data-testid="draw"' \
  && curl -fsS "http://127.0.0.1:${URL_PORT}/static/explorer/explorer.js" >/dev/null \
  && curl -fsS "http://127.0.0.1:${URL_PORT}/models/cifar10/versions/1/samples/ship.png" >/dev/null \
  || { echo "FAIL: the explorer page or its assets are missing" >&2; exit 1; }
cam=$(curl -fsS -F "file=@${digit};type=image/png" "http://127.0.0.1:${URL_PORT}/models/digit_odd/explain" \
  | "$PY" -c "import json,sys; b=json.load(sys.stdin); print(b['label'], b['layer'], len(b['heatmap']))")
echo "   / serves the explorer; /models/digit_odd/explain answered: $cam"
[ "$cam" = "7 maxpool_layer 28" ] || { echo "FAIL: explain answered: $cam" >&2; exit 1; }

uid=$("${ENGINE[@]}" exec "$NAME" sh -c 'grep "^Uid:" /proc/1/status | cut -f2')
echo "   server process uid=$uid"
[ "$uid" != "0" ] || { echo "FAIL: the server runs as root" >&2; exit 1; }

"${ENGINE[@]}" stop -t 10 "$NAME" >/dev/null
"${ENGINE[@]}" image prune -f >/dev/null 2>&1 || true  # vfs keeps full copies of old layers
echo "PASS: container built, served /predict, gRPC, the explorer and Grad-CAM as uid $uid, stopped"
