#!/usr/bin/env bash
# The quick preset of both benchmarks on a GPU, in one call; results stored beside the CPU ones,
# named by the card (e.g. bench/results/gpu-NVIDIA_H100_80GB_HBM3/).
# Needs a CUDA jax: `pip install -e ".[bench]" "jax[cuda12]"` (done here when jax sees no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  $PY -m pip install -q -e ".[bench]" "jax[cuda12]"
fi
card=$($PY -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
out="bench/results/gpu-$card"
mkdir -p "$out"
export KERAS_BACKEND=jax
$PY bench/scan_vs_unroll.py --quick --out "$out"
$PY bench/peers.py --quick --out "$out"
echo "GPU results in $out"
