#!/usr/bin/env bash
# The accuracy study on a lent GPU (issue 13), in one command: simulate the hsc9 survey of the CPU
# studies (6,000 galaxies, seed 1: the same galaxies as ~/mmz-accuracy/hsc9-6000), build its cubes,
# train the colour forest, then the baseline, the 2-band early network, the fusion-stage and
# modality-size variants and the network with modality dropout at fold 0, all at once under CUDA MPS,
# compare each with the baseline by the paired bootstrap and scan the modalities (mmz dropout-scan) (bench/accuracy.py --step variants, then --step analyse). Every result file and
# every run's learning curve lands in $OUT, also when the lease ends first. Budget: GPU_STUDY_BUDGET s.
#
# On the lent GPU machine (bundle built here with `bash ../shared/tools/offline-site.sh`):
#   mkdir -p /tmp/site && tar xJf .gpu-site/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
#   OUT=$OUT GPU_STUDY_BUDGET=560 bash bench/gpu_study.sh   (GPU_STUDY_TEST_N=5000: also a test survey)
# Its logic on a CPU (tests/test_gpu_check.py):
#   GPU_STUDY_N=200 GPU_STUDY_EPOCHS=1 GPU_STUDY_DEVICE=cpu GPU_STUDY_VARIANTS=dropout bash bench/gpu_study.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
N=${GPU_STUDY_N:-6000}
WIDTH=${GPU_STUDY_WIDTH:-0.25}
EPOCHS=${GPU_STUDY_EPOCHS:-30}
DEVICE=${GPU_STUDY_DEVICE:-cuda}
VARIANTS=${GPU_STUDY_VARIANTS:-}    # a subset of bench/accuracy.py's VARIANT_FLAGS; empty: all eight
BUDGET=${GPU_STUDY_BUDGET:-560}
TEST_N=${GPU_STUDY_TEST_N:-0}       # > 0: then score every run on a test survey of that many (bench/accuracy.py --step test)
STUDY=${GPU_STUDY_DIR:-$(mktemp -d)/hsc9-$N}
CORES=$(nproc)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_study.log") 2>&1
started=$SECONDS
failed=()
step() { echo; echo "== $(date +%T) (+$((SECONDS - started)) s) $*"; }
left() { echo $((BUDGET - (SECONDS - started))); }
study() {  # study NAME SECONDS ARGS...: one step of bench/accuracy.py, capped in time on a GPU
    local name=$1 limit=$2
    shift 2
    [ "$DEVICE" = cuda ] || limit=0
    timeout --kill-after=10 "$limit" $PY bench/accuracy.py --profile hsc9 -n "$N" --dir "$STUDY" "$@" ||
        { echo "!! $name failed or ran past $limit s (exit $?)"; failed+=("$name"); }
}
collect() {  # whatever exists, into $OUT: on a timeout too
    for f in study.json accuracy.json variants.json timings.json commands.txt dropout-scan/dropout.json \
        dropout-scan/dropout_vs_z.png test/accuracy-test.json; do
        [ -f "$STUDY/$f" ] && cp "$STUDY/$f" "$OUT/"
    done
    for run in "$STUDY"/runs/*/; do
        [ -d "$run" ] || continue
        name=$(basename "$run")
        for f in metrics.json train.log config.yaml; do [ -f "$run/$f" ] && cp "$run/$f" "$OUT/run-$name-$f"; done
    done
}
trap collect EXIT

step "device"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'" || exit 1
    amp=--amp
else
    amp=--no-amp
fi
$PY -c "import torch, zarr, sklearn, mmzcli; print('torch', torch.__version__, '| mmz', mmzcli.__version__)" || exit 1
# the study's settings are fixed by its first call
study data 120 --width "$WIDTH" --epochs "$EPOCHS" --folds 1 "$amp" -j "$CORES" --step data
[ ${#failed[@]} -eq 0 ] || exit 1  # no survey, nothing to train

step "forest"
study forest 90 -j "$CORES" --step forest

mps=""
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && mps=" under CUDA MPS"
fi
n_runs=$((2 + $(echo "${VARIANTS:-a,b,c,d,e,f,g,h}" | tr ',' '\n' | wc -l)))
step "variants: $n_runs runs at once$mps, width $WIDTH, $EPOCHS epochs ($(left) s left)"
OMP_NUM_THREADS=$((CORES / n_runs > 0 ? CORES / n_runs : 1)) \
    study variants "$(($(left) - 60))" -j "$CORES" --step variants --parallel "$n_runs" ${VARIANTS:+--variants "$VARIANTS"}
if [ -n "$mps" ]; then echo quit | nvidia-cuda-mps-control; fi

step "analyse: evaluate, baseline / multimodal / forest bootstrap"
study analyse 50 -j "$CORES" --step analyse

if [ "$TEST_N" -gt 0 ]; then  # every run again on an independent test survey: 8x the held-out objects at 10,000
    step "test survey of $TEST_N galaxies ($(left) s left)"
    study test "$(left)" -j "$CORES" --step test --test-n "$TEST_N"
fi

step "done in $((SECONDS - started)) s; results in $OUT${failed[*]:+; FAILED: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
