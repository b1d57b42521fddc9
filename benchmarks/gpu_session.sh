#!/usr/bin/env bash
# One device-machine session for the "cuda" backend: build the CPU
# extensions, run every cuda-marked / cuda-parametrised test, check and run
# the GPU benchmark.  Written for the lent GPU machines of this workplace
# (their image has CuPy, torch with CUDA, nvcc, pytest, xdist, hypothesis);
# run from the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu_session.sh [tests|bench|all]
#
# Logs and the benchmark results (bench_gpu_kernels.py: the kernels A/B;
# bench_gpu.py: the issue's table; bench_gpu_result_check.py: the kernels'
# result test against the layer's scan) go to $OUT (default ./gpu-session-out).
#
# The CPU extensions are only the tests' and benchmarks' oracle here, so the
# build leaves out the AVX2 variant of the solver (MLPGX_NO_AVX2=1, the
# build's longest compile) unless the caller sets MLPGX_NO_AVX2=0;
# MLPGX_DEBUG_BUILD=1 (-O0) shortens it further.
# Each step has its own time limit so that one hung step cannot eat the
# whole lease; the summary at the end says which steps passed.
set -uo pipefail
export PYTHONUNBUFFERED=1
# the in-place build is what the tests and benchmarks import
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-gpu-session-out}
WHAT=${1:-all}
mkdir -p "$OUT"
LOG="$OUT/session.log"
PY=${PYTHON:-python3}
declare -a SUMMARY=()

step() {  # step NAME SECONDS CMD...
    local name=$1 secs=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${secs}s)" | tee -a "$LOG"
    timeout "$secs" "$@" >>"$LOG" 2>&1
    local rc=$?
    SUMMARY+=("$name: rc=$rc in $((SECONDS - t0))s")
    echo "=== $name: rc=$rc in $((SECONDS - t0))s" | tee -a "$LOG"
    return $rc
}

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
    nvcc --version | tail -2
    $PY -c "import sys, numpy, scipy, cupy, torch, Cython; print(sys.version); print('numpy', numpy.__version__, 'scipy', scipy.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda, 'Cython', Cython.__version__)"
    nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

export MLPGX_NO_AVX2=${MLPGX_NO_AVX2:-1}
echo "build: MLPGX_NO_AVX2=$MLPGX_NO_AVX2 MLPGX_DEBUG_BUILD=${MLPGX_DEBUG_BUILD:-0}" | tee -a "$LOG"
step build ${BUILD_LIMIT:-240} $PY setup.py build_ext --inplace -j "$(nproc)"
$PY -c "import mlpgx; print({n: mlpgx.backends.get(n).availability() for n in mlpgx.backends.names()})" 2>&1 | tee -a "$LOG"

if [[ $WHAT == tests || $WHAT == all ]]; then
    # -k cuda: the backend-parametrised suite's cuda cases and the cuda-marked
    # torch tests (test_cuda_source.py, the host build of the kernels and the
    # nvcc compile checks, needs no GPU: CI runs it)
    step tests ${TESTS_LIMIT:-180} $PY -m pytest tests -k "cuda and not test_cuda_source" -q -rfE \
        -p no:cacheprovider -n 8
    grep -E "passed|failed|error" "$LOG" | tail -3
fi

if [[ $WHAT == bench || $WHAT == all ]]; then
    step kernels ${KERNELS_LIMIT:-120} $PY benchmarks/bench_gpu_kernels.py --out-dir "$OUT"
    step bench ${BENCH_LIMIT:-150} $PY benchmarks/bench_gpu.py --out-dir "$OUT"
    step result-check ${RESULT_CHECK_LIMIT:-90} $PY benchmarks/bench_gpu_result_check.py \
        --out-dir "$OUT"
fi

echo
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
# the failures, for the reply's tail
grep -E "^(FAILED|ERROR) " "$LOG" | head -40 || true
