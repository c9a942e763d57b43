#!/usr/bin/env bash
# The quick presets of the three benchmarks on a GPU, in one call (at most 10 minutes); results
# stored beside the CPU ones, named by the card (e.g. bench/results/gpu-NVIDIA_H200/).
# Needs a CUDA jax: `pip install -e ".[bench]" "jax[cuda12]"` (done here when jax sees no GPU).
# Each script gets a time budget (seconds, override with PEERS_S / PARALLEL_S / GRID_S) so that one
# slow part cannot starve the others; the grid stops starting new points when its budget is spent,
# and peers/parallel save after each workload / T. Sized from an H200 run (2026-11-27), where GPU
# compiles (1-10 s each) dominate: the full quick peers took over 320 s, so jrnn's best unroll is
# searched over 1/4/16 only and the parallel bench runs T = 256 and 4096.
# Float32 matmuls run at full precision (no TF32) in JAX and PyTorch alike, as on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
  $PY -m pip install -q -e ".[bench]" "jax[cuda12]" || exit 1
fi
card=$($PY -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))") || exit 1
out=${GPU_OUT:-bench/results/gpu-$card}
mkdir -p "$out"
export JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest} KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
status=0
timeout "${PEERS_S:-300}" $PY bench/peers.py --quick --unrolls 1,4,16 --out "$out" || status=1
timeout "${PARALLEL_S:-120}" $PY bench/parallel.py --quick --ts 256,4096 --out "$out" || status=1
timeout "$(( ${GRID_S:-110} + 60 ))" $PY bench/scan_vs_unroll.py --quick --budget-seconds "${GRID_S:-110}" \
  --out "$out" || status=1
echo "GPU results in $out (status $status)"
exit $status
