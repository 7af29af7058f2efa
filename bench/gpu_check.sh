#!/usr/bin/env bash
# The GPU check (issue 12): run the training bench, simulate a survey, build its cubes and run a short
# multi-model `mmz train`, and print the figures: loop/step, utilisation against the measured bf16
# peak, multimodal/baseline and the aggregate rate of several models at once, each also with CUDA
# graphs (torch.compile mode reduce-overhead: does launch overhead hold a batch of 32 back?). A
# missing GPU stops it at once; a failed stage is reported and the next one runs, each capped in
# time, so one run inside a lease brings back what worked. Every result lands in $OUT as it is
# measured. Budget on one H100/H200 with 16 cores: GPU_CHECK_BUDGET (480 s).
#
# On the lent GPU machine (no network; bundle built here with `bash ../shared/tools/offline-site.sh`):
#   mkdir -p /tmp/site && tar xJf .gpu-site/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
#   bash bench/gpu_check.sh
# Its logic, on a CPU in about a minute (what tests/test_gpu_check.py runs):
#   GPU_CHECK_N=240 GPU_CHECK_WIDTH=0.125 GPU_CHECK_DEVICE=cpu GPU_CHECK_JOBS=2 GPU_CHECK_STEPS=3 \
#     GPU_CHECK_VARIANTS=0 bash bench/gpu_check.sh
set -uo pipefail

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
N=${GPU_CHECK_N:-10000}             # labelled galaxies of the simulated hsc9 survey
WIDTH=${GPU_CHECK_WIDTH:-1}         # the paper's network
DEVICE=${GPU_CHECK_DEVICE:-cuda}
JOBS=${GPU_CHECK_JOBS:-5}           # models at once, 1-5: folds 0..JOBS-1 of one seed, all training together
STEPS=${GPU_CHECK_STEPS:-30}        # timed steps per bench figure
VARIANTS=${GPU_CHECK_VARIANTS:-0}   # 1: also the uncompiled layouts and batch 128 (measured 2026-11-27)
variants=()
if [ "$VARIANTS" = 1 ]; then variants=(--variants); fi
BUDGET=${GPU_CHECK_BUDGET:-480}     # seconds for the whole check; the last stage gets what is left
PROJECT=${GPU_CHECK_PROJECT:-$(mktemp -d)/survey}
CORES=$(nproc)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
started=$SECONDS
failed=()
step() { echo; echo "== $(date +%T) (+$((SECONDS - started)) s) $*"; }
# stage NAME SECONDS COMMAND...: runs COMMAND, on a GPU for at most SECONDS (the lease); a failure is
# recorded, not fatal
stage() {
    local name=$1 limit=$2
    shift 2
    [ "$DEVICE" = cuda ] || limit=0  # no lease on a CPU: no limit
    timeout --kill-after=10 "$limit" "$@" || { echo "!! $name failed or ran past $limit s (exit $?)"; failed+=("$name"); }
}

step "device"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'" || exit 1
fi
$PY -c "import torch, zarr, mmzcli; print('torch', torch.__version__, '| zarr', zarr.__version__, '| mmz', mmzcli.__version__)" ||
    exit 1

step "bench: step, loop, utilisation, multimodal/baseline (width $WIDTH)"
stage bench 200 $PY bench/train.py --device "$DEVICE" --widths "$WIDTH" --steps "$STEPS" --jobs 0 \
    "${variants[@]}" --json "$OUT/bench.json"
if [ "$DEVICE" = cuda ]; then
    step "bench: the same with CUDA graphs"
    stage bench-graphs 150 $PY bench/train.py --device "$DEVICE" --widths "$WIDTH" --steps "$STEPS" --jobs 0 \
        --compile on --compile-mode reduce-overhead --json "$OUT/bench-graphs.json"
fi

step "simulate: hsc9, $N galaxies, $CORES processes"
stage simulate 150 $PY -m mmzcli -q simulate --profile hsc9 -n "$N" --project "$PROJECT" -j "$CORES" --seed 1
step "build-cubes"
stage build-cubes 120 $PY -m mmzcli -q build-cubes --project "$PROJECT" -j "$CORES"

# Processes sharing a GPU take turns on it unless CUDA MPS runs their kernels side by side
# (docs/benchmarks.md: 5 models 851 samples/s without, 1561 with): the rest runs under MPS where it starts.
mps=""
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    if nvidia-cuda-mps-control -d; then mps=" under CUDA MPS"; else echo "!! MPS did not start: the processes take turns"; fi
fi
step "bench: $JOBS models at once$mps"
stage bench-jobs 120 $PY bench/train.py --device "$DEVICE" --widths "$WIDTH" --steps "$STEPS" --jobs "$JOBS" \
    --only-concurrent --json "$OUT/bench-jobs.json"
step "mmz train: $JOBS folds x 1 seed, all at once$mps, 1 epoch (the real command)"
stage train 150 $PY -m mmzcli -q train --project "$PROJECT" --fusion early --width "$WIDTH" \
    --device "$DEVICE" --epochs 1 --folds "$JOBS" --jobs "$JOBS" --name check
if [ "$DEVICE" = cuda ]; then  # last: what is left of the budget
    left=$((BUDGET - (SECONDS - started)))
    step "bench: $JOBS models at once$mps, with CUDA graphs ($left s left)"
    stage bench-jobs-graphs "$((left > 30 ? left : 30))" $PY bench/train.py --device "$DEVICE" --widths "$WIDTH" \
        --steps "$STEPS" --jobs "$JOBS" --only-concurrent --compile on --compile-mode reduce-overhead \
        --json "$OUT/bench-jobs-graphs.json"
fi
if [ -n "$mps" ]; then echo quit | nvidia-cuda-mps-control; fi
run="$PROJECT/runs/check"
cp "$run/train.log" "$run/metrics.json" "$run/config.yaml" "$OUT/" 2>/dev/null
$PY - "$run" "$OUT" "$mps" <<'EOF'
import json, re, sys
from pathlib import Path

run, out, mps = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for name, label in (("bench", "compiled"), ("bench-graphs", "CUDA graphs")):
    if not (out / f"{name}.json").exists():
        continue
    b = json.loads((out / f"{name}.json").read_text())
    print(f"\n{b['device']}, torch {b['torch']}, {b['precision']}, batch {b['batch']}, "
          f"{'channels_last' if b['channels_last'] else 'NCHW'}, compile {b['compile']} ({label}); "
          f"bf16 peak {b['peak_flops']['bf16'] / 1e12:.0f} TFLOP/s")
    for r in b["rows"]:
        print(f"  {r['model']:10s} step {r['step']:7.1f}  loop {r['loop']:7.1f}  loop/step {r['loop_over_step']:.2f}  "
              f"util {r['utilisation']:.1%}")
    for width, ratio in b.get("mm_over_base", {}).items():
        print(f"  multimodal/baseline (width {width}): {ratio:.2f}")
    if b.get("cudagraph_skips"):
        print(f"  !! torch.compile ran {b['cudagraph_skips']} graph(s) without CUDA graphs: these are partly plain compiled")
    for v in b.get("variants", []):
        print(f"  uncompiled {v['model']:10s} {v['layout']:13s} batch {v['batch']:3d}: step {v['step']:7.1f}")
for name, label in (("bench-jobs", ""), ("bench-jobs-graphs", ", CUDA graphs")):
    if (out / f"{name}.json").exists():
        for c in json.loads((out / f"{name}.json").read_text()).get("concurrent", []):
            print(f"  {c['jobs']} models at once{mps}{label}: {c['aggregate']:.0f} samples/s in all")
if (run / "train.log").exists():
    log = (run / "train.log").read_text()
    rates = [float(r) for r in re.findall(r"epoch 1: .* (\d+) samples/s", log)]
    print(f"mmz train per-model epoch rates (samples/s): {rates}")
    print(f"aggregate while all ran together (sum of the per-model rates, warm-up left out): {sum(rates):.0f} samples/s")
if (run / "metrics.json").exists():
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"models trained: {len(metrics['models'])}; "
          f"out-of-fold sigma_MAD after 1 epoch: {metrics['oof']['sigma_mad']:.4f}")
EOF

step "done in $((SECONDS - started)) s; results in $OUT${failed[*]:+; FAILED: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
