# CI-ONLY stand-in for Dockerfile.train's CUDA PyTorch base (tests/deploy/test_trainer_image.py):
# the python stand-in plus the CPU build of the pinned torch, in a venv that is first on PATH as
# conda's is in pytorch/pytorch. Proves that Dockerfile.train builds, installs the pinned trainer
# dependencies and starts `python -m trainer.train` as a non-root user; not CUDA, not a GPU.
# hadolint ignore=DL3006
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.description="CI-ONLY stand-in: Python 3.11 + CPU torch, for building Dockerfile.train"
ARG TORCH_WHEEL
COPY ${TORCH_WHEEL} /tmp/
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/python -m pip install --no-cache-dir /tmp/torch-*.whl \
 && rm -f /tmp/torch-*.whl
ENV PATH=/opt/torch/bin:$PATH
