# syntax=docker/dockerfile:1
#
# imagine-bot on one NVIDIA GPU. Build:  docker build -t imagine-bot .
# Run:    docker compose up -d   (see compose.yaml and docs/operations.md)
#
# Why the base is nvidia/cuda "base" and not "runtime"/"cudnn-runtime": the CUDA wheels of torch
# carry their own CUDA, cuBLAS and cuDNN libraries (the nvidia-* pip packages), so the bigger
# images would ship those twice (~3 GB). The nvidia/cuda image still matters: it sets
# NVIDIA_REQUIRE_CUDA, so the NVIDIA container toolkit refuses, with a clear message, to start
# on a host driver too old for this CUDA. Keep CUDA_VERSION and TORCH_CUDA in step
# (12.8 <-> cu128); change both to build for another CUDA.
ARG CUDA_VERSION=12.8.1
ARG UBUNTU=ubuntu24.04

# ---------------------------------------------------------------------------------------------
# builder: a virtual environment with torch (CUDA build) and imagine-bot, no compilers kept.
FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Versions come from the pinned Ubuntu release of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# torch first, in its own layer: it is the biggest download and changes least often.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY core ./core
COPY generation ./generation
COPY moderation ./moderation
COPY playground ./playground
# A plain (non-editable) install without the dev extra: no pytest, ruff or hadolint in the image.
# invisible-watermark requires opencv-python, which needs libGL and X libraries; nudenet and
# imagine-bot use opencv-python-headless. Both install the same cv2 module, so drop the GUI
# build and reinstall the headless one over it: the image stays headless and needs no libGL.
# nvidia-ml-py (the "gpu" extra) reads the GPU's energy counter for /stats and the metrics.
RUN pip install . "nvidia-ml-py>=12" \
    && pip uninstall -y opencv-python \
    && pip install --force-reinstall --no-deps \
        "opencv-python-headless==$(pip show opencv-python-headless | sed -n 's/^Version: //p')" \
    && python -c "import cv2, imwatermark, nudenet, bot.cli"

# ---------------------------------------------------------------------------------------------
# runtime: the venv, the Python interpreter it points at, and a user that is not root.
FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU} AS runtime
# model.compile=true needs a C compiler and Python's headers at run time (Triton builds its
# launchers with them): about 200 MB more, so only with --build-arg COMPILE_TOOLS=true.
# `imagine-bot doctor` refuses model.compile in an image built without them.
ARG COMPILE_TOOLS=false
# PYTORCH_CUDA_ALLOC_CONF: many batch sizes and aspect ratios fragment the CUDA allocator;
# expandable segments let it grow blocks instead of failing with memory free but split.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models \
    IMAGINE_DATA_DIR=/data \
    IMAGINE_OPS__METRICS_ENABLED=true \
    IMAGINE_OPS__METRICS_HOST=0.0.0.0 \
    IMAGINE_OPS__METRICS_PORT=9108 \
    IMAGINE_OPS__LOG_JSON=true

# python3: the interpreter the venv links to. ca-certificates: HTTPS to Discord and the hub.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && if [ "$COMPILE_TOOLS" = "true" ]; then \
        apt-get install -y --no-install-recommends gcc libc6-dev python3-dev; fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 imagine \
    && useradd --system --uid 10001 --gid imagine --home-dir /data --shell /usr/sbin/nologin imagine \
    && mkdir -p /data /models \
    && chown imagine:imagine /data /models

COPY --from=builder /opt/venv /opt/venv

# Numeric, so Kubernetes runAsNonRoot and host tools can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /data
# Model cache (Hugging Face, several GB: keep it across upgrades) and the bot's data
# (SQLite database, images, instance keys).
VOLUME ["/models", "/data"]
# Metrics and /healthz; compose publishes it on the host's 127.0.0.1 only.
EXPOSE 9108

# /healthz is 200 while the gateway is connected and the worker is alive (see docs/operations.md).
# The first start may download the model: give it time before failures count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('IMAGINE_OPS__METRICS_PORT', '9108'), timeout=4)"]

ENTRYPOINT ["imagine-bot"]
CMD ["run"]
