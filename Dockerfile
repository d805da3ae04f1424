# syntax=docker/dockerfile:1
# streamlearn container image: the learner daemon, read-only prediction replicas and the demo producer.
#
#   docker build -t streamlearn .                                   # CPU (default)
#   docker build -t streamlearn:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA build of torch
#
#   docker run --rm -p 8080:8080 -e STREAMLEARN__KAFKA__BOOTSTRAP_SERVERS=broker:9092 \
#     -v streamlearn-checkpoints:/var/lib/streamlearn/checkpoints streamlearn
#
# The CUDA variant differs only in the torch wheel (it bundles its CUDA libraries; the host needs an
# NVIDIA driver and the NVIDIA container toolkit: `docker run --gpus all ...`); set
# learner.device: cuda in the config. See deploy/README.md ("GPU").

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtual environment with torch and streamlearn ---------------------------------------
FROM ${PYTHON_IMAGE} AS build
# Inside the version range of pyproject.toml (torch>=2.3,<2.15); the CPU index keeps the image free of
# the multi-GB CUDA libraries that the default PyPI wheel pulls in.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: it is most of the image and changes least often.
RUN pip install --upgrade pip setuptools wheel \
 && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY streamlearn ./streamlearn
# torch is already satisfied, so this installs only the remaining dependencies and streamlearn itself,
# at the versions of requirements.lock (the set `make audit` checks).
RUN pip install -c requirements.lock . \
 && python -c "import torch, streamlearn; print('torch', torch.__version__, 'streamlearn', streamlearn.__version__)"

# ---- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="streamlearn" \
      org.opencontainers.image.description="Online continual-learning daemon: Kafka in, MER/La-MAML, predictions and Prometheus metrics out" \
      org.opencontainers.image.licenses="Apache-2.0"

# One BLAS/OpenMP thread: these small matrices run fastest single-threaded (runtime.threads sets torch's).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    STREAMLEARN_CONFIG=/etc/streamlearn/config.yaml \
    HOME=/home/streamlearn

RUN groupadd --gid 10001 streamlearn \
 && useradd --uid 10001 --gid 10001 --home-dir /home/streamlearn --create-home --shell /usr/sbin/nologin streamlearn \
 && mkdir -p /var/lib/streamlearn/checkpoints /etc/streamlearn \
 && chown -R 10001:10001 /var/lib/streamlearn

COPY --from=build /opt/venv /opt/venv
# The default config (Kafka at kafka:9092, checkpoints in /var/lib/streamlearn/checkpoints, HTTP on
# 0.0.0.0:8080); mount your own over it or override keys with STREAMLEARN__SECTION__KEY.
COPY configs/docker.yaml /etc/streamlearn/config.yaml

USER 10001:10001
WORKDIR /var/lib/streamlearn
# A fresh named volume copies this directory's ownership, so the non-root user can write checkpoints.
VOLUME ["/var/lib/streamlearn/checkpoints"]
EXPOSE 8080

# Liveness only (the process answers HTTP); readiness is /v2/health/ready for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=4).status == 200 else 1)"]

# SIGTERM finishes the current update, checkpoints, commits offsets and exits 0; give it time to do so
# (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamlearn"]
CMD ["run", "-c", "/etc/streamlearn/config.yaml"]
