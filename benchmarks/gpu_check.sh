#!/usr/bin/env bash
# The GPU checks of asyncsnn's Triton kernel in one go, on a machine with an NVIDIA GPU
# (under 10 minutes on one H100/H200 class GPU):
#
#   1. the equality tests of tests/test_triton.py (GPU section: the compiled kernel against
#      the numba CPU kernel, spike for spike, on every network, policy and F in {1, 3, 8};
#      gradients against the CPU kernel's) and tests/test_cuda.py (training on CUDA);
#   2. python -m benchmarks --device cuda --networks fc: the Triton kernel, the PyTorch
#      engine, layered execution and snnTorch on the same GPU and weights, batch 32, 256 and
#      1024, inference and a training step; writes benchmarks/results/latest-cuda.{json,md}.
#
#   bash benchmarks/gpu_check.sh [--data DIR] [--networks fc conv] [other benchmark options]
#
# Needs: a CUDA build of PyTorch, `pip install -e .[test,gpu]`, and the N-MNIST samples
# (../shared/data/nmnist-subset by default; --data DIR gives the folder holding it).
# The first launches compile the kernels (Triton caches them under ~/.triton); each phase
# has its own time limit. The exit status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
unset TRITON_INTERPRET  # the compiled kernel, not the interpreter
export OMP_WAIT_POLICY=PASSIVE

python - <<'PY' || exit 2
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU visible to torch {torch.__version__}: this script needs one")
try:
    import triton
except ImportError:
    sys.exit("Triton is not installed: pip install -e .[gpu]")
print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, Triton {triton.__version__}")
PY

start=$SECONDS
status=0
echo "== 1. equality tests (GPU section of tests/test_triton.py, tests/test_cuda.py)"
timeout 420 python -m pytest tests/test_triton.py tests/test_cuda.py -q -x -p no:cacheprovider \
    -k "gpu or cuda" || status=$?
echo "== tests done in $((SECONDS - start)) s (status $status)"

echo "== 2. python -m benchmarks --device cuda --networks fc $*"
timeout 300 python -m benchmarks --device cuda --networks fc "$@"
bench=$?
[ "$status" -eq 0 ] && status=$bench
echo "== all done in $((SECONDS - start)) s (status $status)"
exit "$status"
