# syntax=docker/dockerfile:1
# cnn-serve: `docker build -t cnn-serve . && docker run -p 8000:8000 cnn-serve`
# GPU image: --build-arg TF_PACKAGE="tensorflow[and-cuda]" (then `docker run --gpus all ...`).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TF_PACKAGE=tensorflow-cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# binutils only in this stage: `strip` takes ~250 MB of symbols out of TensorFlow's libraries
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv
WORKDIR /src
# Dependencies first (cached until pyproject.toml changes). TensorFlow comes as TF_PACKAGE:
# CPU-only by default, which keeps the image small; the project itself is installed --no-deps,
# and so is tensorflow-serving-api, which asks for the full `tensorflow` that TF_PACKAGE
# replaces.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; tf = [d for d in deps if d.startswith('tensorflow')]; open('requirements.txt', 'w').write('\n'.join(d for d in deps if d not in tf)); open('no-deps.txt', 'w').write('\n'.join(d for d in tf if d.startswith('tensorflow-serving-api')))" \
 && pip install "${TF_PACKAGE}>=2.16,<2.22" -r requirements.txt \
 && pip install --no-deps -r no-deps.txt
COPY . .
RUN pip install --no-deps . \
 && SITE=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && rm -rf "$SITE/tensorflow/include" "$SITE/clang" \
 && find "$SITE/tensorflow" -name "*.so*" -type f -exec strip --strip-unneeded {} + \
 && find /opt/venv -name "__pycache__" -prune -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    CNN_SERVE_HOST=0.0.0.0 CNN_SERVE_PORT=8000 CNN_SERVE_GRPC_PORT=8001 \
    CNN_SERVE_MODEL_DIR=/app/models
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cnnserve
COPY --from=build /opt/venv /opt/venv
COPY models /app/models
WORKDIR /app
USER 10001
# REST (and the explorer), and gRPC: KServe V2 / Triton, TF Serving, health, reflection
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status != 200)"]
CMD ["cnn-serve"]
