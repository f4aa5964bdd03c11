#!/usr/bin/env bash
# Fetch, on a machine with PyPI, the pure-Python wheels the GPU image lacks into .whl/ (git
# ignores it); carry .whl/ to the GPU machine with the working tree and gpu_run.sh installs them.
#   ml-collections: the configs (aigc_jax cannot run without it)
#   diffusers:      torch_peers.py's DDPM rows (UNet2DModel); its other needs are in the image
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .whl ml-collections==1.1.0 diffusers==0.42.1
ls -l .whl
