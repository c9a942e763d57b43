#!/usr/bin/env bash
# Run on the host (which has pip and a network) before a device call: downloads into .whl/ (git-ignored)
# the wheels of the peers that the GPU machine's image lacks, dm-haiku and keras, with the dependencies
# it lacks too (jmp; namex, optree), for its Python 3.12 on x86-64. bench/gpu.sh installs them with
# --no-index when the call carries `.whl`. Versions: those of the CPU figures' environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
rm -rf .whl && mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl dm-haiku==0.0.17 jmp==0.0.4 keras==3.15.1 namex==0.1.0 optree==0.20.0
ls -l .whl
