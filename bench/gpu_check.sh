#!/usr/bin/env bash
# The GPU check (issue 12): simulate a survey, build its cubes, run the training bench and a short
# multi-model `mmz train`, and print the figures: loop/step, utilisation against the measured bf16
# peak, multimodal/baseline, and the aggregate rate of several models at once. Fails at the first
# error; every result lands in $OUT. Budget on one H100/H200 with 16 cores: under 8 minutes.
#
# On the lent GPU machine (no network; bundle built here with `bash ../shared/tools/offline-site.sh`):
#   mkdir -p /tmp/site && tar xJf .gpu-site/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD
#   bash bench/gpu_check.sh
# Its logic, on a CPU in about a minute (what tests/test_gpu_check.py runs):
#   GPU_CHECK_N=240 GPU_CHECK_WIDTH=0.125 GPU_CHECK_DEVICE=cpu GPU_CHECK_JOBS=2 GPU_CHECK_STEPS=3 \
#     bash bench/gpu_check.sh
set -euo pipefail

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
N=${GPU_CHECK_N:-15000}             # labelled galaxies of the simulated hsc9 survey
WIDTH=${GPU_CHECK_WIDTH:-1}         # the paper's network
DEVICE=${GPU_CHECK_DEVICE:-cuda}
JOBS=${GPU_CHECK_JOBS:-5}           # models at once, 1-5: folds 0..JOBS-1 of one seed, all training together
STEPS=${GPU_CHECK_STEPS:-30}        # timed steps per bench figure
PROJECT=${GPU_CHECK_PROJECT:-$(mktemp -d)/survey}
CORES=$(nproc)
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
started=$SECONDS
step() { echo; echo "== $(date +%T) (+$((SECONDS - started)) s) $*"; }

step "device"
if [ "$DEVICE" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    $PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'"
fi
$PY -c "import torch, mmzcli; print('torch', torch.__version__, '| mmz', mmzcli.__version__)"

step "simulate: hsc9, $N galaxies, $CORES processes"
$PY -m mmzcli -q simulate --profile hsc9 -n "$N" --project "$PROJECT" -j "$CORES" --seed 1

step "build-cubes"
$PY -m mmzcli -q build-cubes --project "$PROJECT" -j "$CORES"

step "bench: step, loop, utilisation, multimodal/baseline, $JOBS models at once (width $WIDTH)"
$PY bench/train.py --device "$DEVICE" --widths "$WIDTH" --steps "$STEPS" --jobs "$JOBS" --json "$OUT/bench.json"

step "mmz train: $JOBS folds x 1 seed, all at once, 1 epoch (the aggregate rate of the real command)"
$PY -m mmzcli -q train --project "$PROJECT" --fusion early --width "$WIDTH" --device "$DEVICE" \
    --epochs 1 --folds "$JOBS" --jobs "$JOBS" --name check
run="$PROJECT/runs/check"
cp "$run/train.log" "$run/metrics.json" "$run/config.yaml" "$OUT/"
$PY - "$run" <<'EOF'
import json, re, sys
from pathlib import Path

run = Path(sys.argv[1])
log = (run / "train.log").read_text()
rates = [float(r) for r in re.findall(r"epoch 1: .* (\d+) samples/s", log)]
models = json.loads((run / "metrics.json").read_text())["models"]
print(f"models trained: {len(models)}; per-model epoch rates (samples/s): {rates}")
print(f"aggregate while all ran together (sum of the per-model rates): {sum(rates):.0f} samples/s")
print(f"out-of-fold sigma_MAD after 1 epoch: {json.loads((run / 'metrics.json').read_text())['oof']['sigma_mad']:.4f}")
EOF

step "done in $((SECONDS - started)) s; results in $OUT"
