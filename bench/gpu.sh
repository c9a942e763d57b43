#!/usr/bin/env bash
# GPU figures in ONE device call of at most 8 minutes, installs included. In order of value:
#   1. the peers' table W1-W4: jrnn default against Flax, Equinox, Haiku, Keras, jax.experimental.rnn's
#      cuDNN LSTM (W2, W4; jrnn's weights through jrnn/interop/cudnn.py) and PyTorch on CUDA (cuDNN);
#   2. the linear cells' modes: MinGRU, MinLSTM, LRU sequential and parallel, and a GRU, T = 256, 4096, 16384.
# Both save md and JSON after every row (written whole, then renamed), compile times included: a kill at
# any moment keeps every row measured so far. Float32 matmuls run at full precision (no TF32) in JAX,
# in cuDNN's LSTM (JAX_DEFAULT_MATMUL_PRECISION=highest) and in PyTorch (bench/peers.py:torch_device).
#
#   bash bench/gpu.sh              # on the GPU machine: the device call, timeout_s=480
#   GPU_SMOKE=1 bash bench/gpu.sh  # the same path at tiny sizes on any machine (about a minute on 2 CPUs)
#
# Results in $GPU_OUT, else $OUT/gpu-<card> when $OUT is set (the device tool brings $OUT back: 7 files,
# one folder down), else bench/results/gpu-<card>; log.txt beside them.
#
# Installs. The device machine reaches no network, so pip cannot fetch anything there: `pip install
# ".[bench]" "jax[cuda12]"` is impossible in the device call. Its image already has CUDA jax, a CUDA
# torch (2.11, not the extra's 2.13.0: pins do not apply there), flax, equinox and matplotlib; it lacks
# dm-haiku and keras. Run `bash bench/gpu_wheels.sh` on the host first (5 wheels, ~3 MB, into .whl/,
# git-ignored) and name `.whl` in the call's `carry`: they install here with --no-index in seconds.
# On a machine with a network and no CUDA jax, the bench extra and jax[cuda12] are pip-installed instead
# (INSTALL_S). The extra pins torch==2.13.0, which PyPI serves as a CUDA build on Linux x86-64; if torch
# still sees no GPU (a +cpu build from PyTorch's CPU index) it is reinstalled from PyPI only while
# TORCH_S allows: about 3 GB of CUDA wheels, which fits only a fast link; else PyTorch's rows run on the
# CPU and their note says so.
#
# Budget (seconds; override by environment). TOTAL_S=450 from the start of this script, 30 s under the
# device call's 480: setup (wheels, GPU probe) ~20 measured nowhere yet; PEERS_S=240 (the 2026-11-27
# H200 log: W1-W3 took 160 s with jrnn's unroll sweep and autodiff rows, which `--jrnn-rows default`
# leaves out: ~8 compiles of 1-13 s per workload); PARALLEL_S=whatever is left (at most 200: 3 T x 2
# directions x 7 programs, parallel ones compiling 5-12 s). Each part runs under `timeout`, capped at
# what is left of TOTAL_S; a part with under 20 s left is skipped. The scan-vs-unroll grid is not
# here: `timeout 400 python bench/scan_vs_unroll.py --quick --budget-seconds 300 --out ...` in a
# later call.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SMOKE=${GPU_SMOKE:-0}
if [ "$SMOKE" = 1 ]; then TOTAL_S=${TOTAL_S:-300} PEERS_S=${PEERS_S:-150} PARALLEL_S=${PARALLEL_S:-120}
else TOTAL_S=${TOTAL_S:-450} PEERS_S=${PEERS_S:-240} PARALLEL_S=${PARALLEL_S:-200}; fi
start=$SECONDS
left() { echo $(( TOTAL_S - (SECONDS - start) )); }
cap() { local l; l=$(left); echo $(( $1 < l ? $1 : l )); }
export JAX_DEFAULT_MATMUL_PRECISION=${JAX_DEFAULT_MATMUL_PRECISION:-highest} KERAS_BACKEND=jax PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels (bench/gpu_wheels.sh), no network needed
  site=${TMPDIR:-/tmp}/jrnn-bench-site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$site"
fi
has_gpu() { $PY -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; }
if [ "$SMOKE" != 1 ] && ! has_gpu; then
  echo "jax sees no GPU: pip install (needs a network; impossible on the device machine)"
  timeout "$(cap "${INSTALL_S:-150}")" $PY -m pip install -q -e ".[bench]" "jax[cuda12]"
  has_gpu || { echo "still no GPU for jax after $(( SECONDS - start )) s: stopping"; exit 1; }
fi
if [ "$SMOKE" != 1 ] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "torch sees no GPU: reinstalling torch==2.13.0 from PyPI (a CUDA build), if TORCH_S allows"
  timeout "$(cap "${TORCH_S:-120}")" $PY -m pip install -q --force-reinstall --index-url https://pypi.org/simple \
    torch==2.13.0 || echo "no CUDA torch: PyTorch's rows run on the CPU"
fi

card=$($PY -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))") || exit 1
out=${GPU_OUT:-${OUT:+$OUT/gpu-$card}}
out=${out:-bench/results/gpu-$card}
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
echo "$(date -u +%FT%TZ) bench/gpu.sh on $card, smoke=$SMOKE, setup took $(( SECONDS - start )) s"

status=0
part() {  # part NAME BUDGET_S command...: under timeout, never past TOTAL_S
  local name=$1 s; s=$(cap "$2"); shift 2
  if (( s < 20 )); then echo "== $name: skipped, $s s left of TOTAL_S=$TOTAL_S"; status=1; return; fi
  echo "== $name: up to $s s, at $(( SECONDS - start )) s"
  timeout "$s" "$@"; local rc=$?
  echo "== $name: rc $rc at $(( SECONDS - start )) s"
  (( rc == 0 )) || status=1
}
if [ "$SMOKE" = 1 ]; then
  part peers "$PEERS_S" $PY bench/peers.py --smoke --workloads W1,W2 --jrnn-rows default --out "$out"
  part parallel "$PARALLEL_S" $PY bench/parallel.py --smoke --ts 4,16 --calls 2 --save-every-row --out "$out"
else
  part peers "$PEERS_S" $PY bench/peers.py --quick --jrnn-rows default --out "$out"
  part parallel "$PARALLEL_S" $PY bench/parallel.py --quick --ts 256,4096,16384 --save-every-row --out "$out"
fi
echo "results in $out after $(( SECONDS - start )) s (status $status): $(ls "$out" | tr '\n' ' ')"
exit $status
