#!/usr/bin/env bash
# Every GPU check in one run, on one NVIDIA GPU (H100 / H200), from the repository root:
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh    # about 4 to 5 minutes; at worst BUDGET_S (480 s) + ~15 s
#
# 0. generate 5,216 full-size JPEGs once, in parallel processes (shared by steps 1 and 2, timed by neither)
# 1. benchmarks/training_throughput.py: blog post recipe, this series' recipe, compute limit
#    (2,048 JPEGs, 224 px, batch 128; the blog post's recipe at its batch 64)
# 2. benchmarks/whole_job.py: the blog post's whole job (5,216 JPEGs, 10 epochs; batch 128, the
#    blog post's 64), this series timed in full, the blog post's job extrapolated
# 3. benchmarks/full_run.py: notebooks 02 + 03 at full size on real X-rays, only if .gpudata/chest_xray exists
#
# Every step runs under `timeout` within one overall budget, and a failing step does not stop the next.
# Everything goes to stdout and to "$OUT/gpu_check.log"; steps 1 to 3 also write a JSON file to "$OUT" (4 files in all).
# Needs only Python with torch, torchvision, Pillow, numpy, scikit-learn, matplotlib, tqdm, requests; no network.
# PRECISIONS=1 adds steps 4 and 5 (see below). It stops after the preflight when there is no CUDA GPU. SMOKE=1 runs the same steps with tiny sizes on any machine
# (a check of this script, not a measurement); DATA_DIR points step 3 at another copy of the real X-rays.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-$PWD/gpu_check_out}"
BUDGET_S="${BUDGET_S:-480}"  # the whole script, worst case; each step also has its own cap below
DATA_DIR="${DATA_DIR:-.gpudata/chest_xray}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg CXR_PRETRAINED=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # cxr_utils and cxr_support from this checkout
POOL="$(mktemp -d "${TMPDIR:-/tmp}/cxr_jpegs.XXXXXX")"
trap 'rm -rf "$POOL"' EXIT
START=$SECONDS
FAILED=()

if [ "${SMOKE:-0}" = 1 ]; then
    N_JPEGS=32
    TT_ARGS=(--images 24 --size 32 --batch-size 8 --blog-batch-size 8 --epochs 2 --seed-epochs 1
             --limit-warmup 1 --limit-steps 2)
    WJ_ARGS=(--images 32 --epochs 2 --size 32 --batch-size 8 --blog-batch-size 8 --seed-epochs 1
             --decode-check 8)
    FR_ARGS=(--size 32 --batch-size 8 --epochs 1 --max-images 24)
else
    N_JPEGS=5216
    # --batch-size: this series and the compute limit; --blog-batch-size: the blog post's (64)
    TT_ARGS=(--images 2048 --size 224 --batch-size 128 --blog-batch-size 64 --epochs 4
             --seed-epochs 2 --limit-warmup 15 --limit-steps 60)
    WJ_ARGS=(--images 5216 --epochs 10 --size 224 --batch-size 128 --blog-batch-size 64
             --seed-epochs 1 --decode-check 2048)
    FR_ARGS=(--size 224 --batch-size 64 --epochs 8 --max-lr 3e-4)
fi

# run_step NAME CAP_S MIN_S COMMAND...: run COMMAND under timeout, for at most CAP_S and what is left of the budget.
run_step() {
    local name="$1" cap="$2" min="$3"
    shift 3
    local left=$((BUDGET_S - (SECONDS - START) - 5))
    local limit=$((cap < left ? cap : left))
    echo
    echo "=============== $name (limit ${limit} s; $((SECONDS - START)) s into the run) ==============="
    if ((limit < min)); then
        echo "SKIPPED: only ${left} s of the budget left; this step needs at least ${min} s"
        FAILED+=("$name (skipped)")
        return 0
    fi
    local t0=$SECONDS rc
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    if ((rc == 124 || rc == 137)); then
        echo "TIMED OUT after $((SECONDS - t0)) s: $name"
        FAILED+=("$name (timed out)")
    elif ((rc != 0)); then
        echo "FAILED with exit code $rc after $((SECONDS - t0)) s: $name"
        FAILED+=("$name (exit $rc)")
    else
        echo "done in $((SECONDS - t0)) s: $name"
    fi
    return 0
}

echo "=============== environment ==============="
date -u '+%Y-%m-%dT%H:%M:%SZ'
git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -20
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
echo "CPU cores: $(getconf _NPROCESSORS_ONLN); $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null); memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB"}')"
echo "JPEG pool: $POOL; output: $OUT; budget ${BUDGET_S} s"

run_step "preflight: imports and device" 60 10 "$PY" -c "
import platform, sys
import numpy, PIL, sklearn, matplotlib, tqdm, torch, torchvision
print(f'Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), '
      f'torchvision {torchvision.__version__}, numpy {numpy.__version__}, Pillow {PIL.__version__}, scikit-learn {sklearn.__version__}')
gpu = torch.cuda.is_available()
print('CUDA available:', gpu, '| native bf16:', gpu and torch.cuda.get_device_capability()[0] >= 8)
if gpu:
    print('GPU:', torch.cuda.get_device_name(), f'{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB')
sys.path.insert(0, 'benchmarks')
import cxr_utils, common, input_pipeline, training_throughput, whole_job, full_run  # every import resolves
print('imports ok:', cxr_utils.__file__)
"
if [ "$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)" != 1 ]; then
    if [ "${SMOKE:-0}" != 1 ]; then
        echo "NO CUDA GPU: stopping here (SMOKE=1 runs tiny sizes on a CPU, as a check of this script)."
        exit 1
    fi
    echo "no CUDA GPU; SMOKE=1, so going on with tiny sizes on the CPU"
fi

run_step "0. generate $N_JPEGS full-size JPEGs ($(getconf _NPROCESSORS_ONLN) processes)" 150 30 "$PY" -c "
import sys, time; sys.path.insert(0, 'benchmarks')
from pathlib import Path
from common import make_fullsize_jpegs
start = time.perf_counter()
root = make_fullsize_jpegs(Path('$POOL') / 'unused', $N_JPEGS, pool=Path('$POOL'))
files = list(root.rglob('*.jpeg'))  # links into the pool
print(f'{len(files)} JPEGs, {sum(f.stat().st_size for f in files) / 1e6:.0f} MB, in {time.perf_counter() - start:.1f} s')
"

run_step "1. training throughput: blog post / this series / compute limit" 150 60 \
    "$PY" benchmarks/training_throughput.py "${TT_ARGS[@]}" --jpeg-pool "$POOL" --json "$OUT/training_throughput.json"

run_step "2. whole job: the blog post's job, JPEG files (page cache) to last validation" 210 90 \
    "$PY" benchmarks/whole_job.py "${WJ_ARGS[@]}" --jpeg-pool "$POOL" --json "$OUT/whole_job.json"

if [ -d "$DATA_DIR" ]; then
    run_step "3. notebooks 02 + 03 at full size on real X-rays ($DATA_DIR)" 120 60 \
        "$PY" benchmarks/full_run.py --data-dir "$DATA_DIR" "${FR_ARGS[@]}" --json "$OUT/full_run.json"
else
    echo
    echo "=============== 3. full run: SKIPPED (no $DATA_DIR in this checkout) ==============="
fi

# PRECISIONS=1 adds two steps (not in the default budget): the precisions side by side, and the
# full run with fp16 and its gradient scaler forced (the path a T4 takes), to compare with bf16.
if [ "${PRECISIONS:-0}" = 1 ]; then
    run_step "4. training throughput in bf16, fp16 + gradient scaler and fp32" 240 60 \
        "$PY" benchmarks/training_throughput.py "${TT_ARGS[@]}" --precisions bf16,fp16,fp32 \
        --jpeg-pool "$POOL" --json "$OUT/precisions.json"
    if [ -d "$DATA_DIR" ]; then
        run_step "5. notebooks 02 + 03 at full size with fp16 forced" 120 60 \
            "$PY" benchmarks/full_run.py --data-dir "$DATA_DIR" "${FR_ARGS[@]}" --precision fp16 \
            --json "$OUT/full_run_fp16.json"
    fi
fi

echo
echo "=============== summary: $((SECONDS - START)) s in all ==============="
grep -hE "^this series / |THIS SERIES, WHOLE JOB|BLOG POST, WHOLE JOB|blog post \(extrapolated\) / this series|decode_files, workers|^(metric|accuracy|sensitivity|specificity|roc_auc) " \
    "$OUT/gpu_check.log" | sed 's/^ */  /'
if ((${#FAILED[@]})); then
    printf 'NOT OK: %s\n' "${FAILED[@]}"
else
    echo "every step finished"
fi
ls -l "$OUT"
exec >&- 2>&-
wait "$TEE_PID"  # let tee write the last lines before the script ends
