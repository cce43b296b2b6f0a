#!/usr/bin/env bash
# On a machine with a CUDA GPU: run the GPU tests and every GPU row of the README's Speed section
# (models train / infer in bf16 with torch.compile, P(k) and the bispectrum set at 512^3, whole-box
# prediction at 512^3, the training loader feeding the GPU) within a time budget (default 480 s
# on one H100 / H200), and write gpu_check.json and gpu_check.md (plus each step's log and raw
# rows) into the output folder. Without a GPU it says so and exits 0.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]    # default $OUT, else benchmarks/gpu_results/
#
# The GPU machine needs no package registry: packages it lacks (Hydra, OmegaConf, tqdm, pytest)
# are installed from benchmarks/gpu_wheels/ (made by benchmarks/gpu_wheels.sh where PyPI is
# reachable) into a temporary folder put on PYTHONPATH with the repository root; nothing is
# installed into the machine's Python. Every step runs under `timeout`, capped by what is left
# of the budget, so one hang cannot eat the rest; a step that fails or times out is recorded
# and the next one runs.
#
# Environment: GPU_CHECK_BUDGET_S (480 s), GPU_CHECK_WHEELS (benchmarks/gpu_wheels), PYTHON
# (python3), GPU_CHECK_FORCE_CPU=1 (no GPU needed: every step on the CPU at tiny sizes, to test
# the plumbing; its numbers mean nothing; budget 900 s for a busy 2-core machine).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$ROOT/benchmarks/gpu_results}}"
OUT_DIR="$(realpath -m "$OUT_DIR")"
DRY="${GPU_CHECK_FORCE_CPU:-0}"
BUDGET="${GPU_CHECK_BUDGET_S:-$([ "$DRY" = 1 ] && echo 900 || echo 480)}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/benchmarks/gpu_wheels}"
PYTHON="${PYTHON:-python3}"
START="$(date +%s)"
DEADLINE=$((START + BUDGET))
cd "$ROOT" || exit 1

if [ "$DRY" != 1 ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
    > /dev/null 2>&1; then
    echo "gpu_check: skipped, no CUDA GPU here (torch.cuda.is_available() is not true for $PYTHON)"
    exit 0
fi

# -- packages the machine lacks, from the wheels -------------------------------------------------
SITE="$(mktemp -d "${TMPDIR:-/tmp}/dm2gal_gpu_site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
declare -A PROVIDES=([hydra]=hydra-core [omegaconf]=omegaconf [tqdm]=tqdm [pytest]=pytest)
MISSING=()
for module in "${!PROVIDES[@]}"; do
    "$PYTHON" -c "import $module" > /dev/null 2>&1 || MISSING+=("${PROVIDES[$module]}")
done
if [ "${#MISSING[@]}" -gt 0 ]; then
    if [ ! -d "$WHEELS" ]; then
        echo "gpu_check: this Python lacks ${MISSING[*]} and $WHEELS does not exist: run" \
            "benchmarks/gpu_wheels.sh where PyPI is reachable and bring that folder along" >&2
        exit 1
    fi
    echo "gpu_check: installing ${MISSING[*]} from $WHEELS"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --no-index \
        --find-links "$WHEELS" --target "$SITE" "${MISSING[@]}" || exit 1
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"

# -- steps ---------------------------------------------------------------------------------------
rm -rf "$OUT_DIR/raw" "$OUT_DIR/logs" "$OUT_DIR/steps.tsv"  # this run's files only
mkdir -p "$OUT_DIR/raw" "$OUT_DIR/logs"
printf 'step\tstatus\tseconds\tlimit_s\tcommand\n' > "$OUT_DIR/steps.tsv"

step() {  # step NAME LIMIT_S COMMAND...: run COMMAND under timeout, log it, record its status
    local name="$1" limit="$2" left status begin
    shift 2
    left=$((DEADLINE - $(date +%s) - 20))  # kept: timeout's grace before SIGKILL, the report
    if [ "$left" -lt 10 ]; then
        printf '%s\tskipped\t0\t0\t%s\n' "$name" "$*" >> "$OUT_DIR/steps.tsv"
        echo "gpu_check: $name skipped (budget spent)"
        return
    fi
    [ "$left" -lt "$limit" ] && limit="$left"
    echo "gpu_check: $name (limit ${limit} s)"
    begin="$(date +%s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/logs/$name.log" 2>&1
    status=$?
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - begin))" "$limit" "$*" \
        >> "$OUT_DIR/steps.tsv"
    tail -n 3 "$OUT_DIR/logs/$name.log"
}

# sizes: the GPU rows, or (dry mode) tiny CPU ones; per-step limits in s on an H200, where the
# tests and stats take ~20 s each and a model 30-90 s (torch.compile builds six graphs)
if [ "$DRY" = 1 ]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
    DEVICE=cpu LIMIT=180
    STATS=(--grids 32 --angles 2 --repeat 1)
    MODELS=(--quick --side 4 --batch 2 --warmup 0 --steps 1)
    PREDICT=(--grid 32 --tiles 16 --unet channels=4 --paper channels=2 --paper-region 1
        --paper-batches 1)
    LOADER=(--grid 256 --batches 1)
else
    DEVICE=cuda LIMIT=
    STATS=(--grids 256 512)
    MODELS=(--gpu-sizes --compile --warmup 2 --steps 5)
    PREDICT=(--grid 512 --tiles 64 128 --unet channels=64 levels=2 --paper-region 8
        --paper-batches 64 256 --threads 8)
    LOADER=(--grid 512 --batches 10)
fi
RAW="$OUT_DIR/raw"
mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
models() {  # models NAME LIMIT_S
    step "models-$1" "${LIMIT:-$2}" "$PYTHON" benchmarks/bench_models.py --device "$DEVICE" \
        --models "$1" "${MODELS[@]}" --json "$RAW/models-$1.json"
}

step gpu-tests "${LIMIT:-90}" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml="$RAW/gpu-tests.xml" "${GPU_TESTS[@]}"
step stats "${LIMIT:-60}" "$PYTHON" benchmarks/bench_stats.py --devices "$DEVICE" --no-pylians \
    "${STATS[@]}" --json "$RAW/stats.json"
models unet3d 120  # the two reference networks first
models paper_cnn 90
step predict "${LIMIT:-100}" "$PYTHON" benchmarks/bench_predict.py --devices "$DEVICE" \
    "${PREDICT[@]}" --json "$RAW/predict.json"
step loader "${LIMIT:-100}" "$PYTHON" benchmarks/bench_loader.py --device "$DEVICE" \
    "${LOADER[@]}" --json "$RAW/loader.json"
models resnet3d 90
models twophase 90

REPORT=(--budget "$BUDGET" --seconds "$(($(date +%s) - START))")
[ "$DRY" = 1 ] && REPORT+=(--dry)
"$PYTHON" benchmarks/gpu_report.py "$OUT_DIR" "${REPORT[@]}"
