#!/usr/bin/env bash
# GPU check, ready for an offline GPU machine (about 8 minutes of one H200):
#   1. installs only wheels brought along in wheels/ (for the packages this python lacks)
#      into a temporary folder on PYTHONPATH; never an index;
#   2. runs the GPU-marked tests;
#   3. runs a grid through the real CLI on CUDA: every method on 8gaussians, rings and
#      miniboone-small at `quick`, the flagship also at `paper` on 8gaussians, each cell
#      with a time limit; fails loudly if any cell is not ok;
#   4. measures the GPU speed ratios (benchmarks/gpu_check.py ratios);
#   5. writes into OUT_DIR (6 files): report.md, results.csv, summary.md, ratios.json,
#      tests.txt, log.txt.
#
#   scripts/gpu_check.sh OUT_DIR                      # real mode: needs a CUDA GPU
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh OUT_DIR # dry run on CPU: smoke profile, tiny grid
#
# Settings (environment): PY (default .venv/bin/python, else python3); DENSITYBENCH_DATA (default
# gpu-data/ in the checkout, else ../shared/data); GPU_CHECK_WHEELS (default wheels/);
# GPU_CHECK_METHODS and GPU_CHECK_DATASETS override the grid (used by the tests).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

die() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: scripts/gpu_check.sh OUT_DIR"
OUT=$1
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
: > "$LOG"
log() { echo "gpu_check: $*" | tee -a "$LOG"; }

DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ -n "${PY:-}" ]; then :; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
command -v "$PY" >/dev/null 2>&1 || die "no python at '$PY' (set PY=...)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$("$PY" -V 2>&1) is too old: Python >= 3.11 needed"
"$PY" -c 'import torch' 2>/dev/null || die "'$PY' has no torch: use a python with a CUDA build of torch"

# 1. wheels brought along, for what this python lacks (module:distribution)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SITE=$WORK/site
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/wheels}
missing=()
for pair in nflows:nflows ot:POT tabulate:tabulate tqdm:tqdm numpy:numpy scipy:scipy \
            pandas:pandas matplotlib:matplotlib sklearn:scikit-learn pytest:pytest pluggy:pluggy iniconfig:iniconfig; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ -d "$WHEELS" ] || die "missing ${missing[*]} and no wheel folder $WHEELS (prepare it with: make gpu-wheels)"
    log "installing from $WHEELS (no index): ${missing[*]}"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" --no-deps \
        --target "$SITE" "${missing[@]}" >>"$LOG" 2>&1 || die "installing ${missing[*]} from $WHEELS failed (see $LOG)"
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 DENSITYBENCH_NO_PROGRESS=1
if [ -z "${DENSITYBENCH_DATA:-}" ]; then
    if [ -d "$ROOT/gpu-data" ]; then export DENSITYBENCH_DATA=$ROOT/gpu-data
    elif [ -d "$ROOT/../shared/data" ]; then export DENSITYBENCH_DATA=$ROOT/../shared/data
    fi
fi
log "python $("$PY" -V 2>&1 | cut -d' ' -f2), data ${DENSITYBENCH_DATA:-none}, device $DEVICE"

if [ "$DEVICE" = cuda ]; then
    "$PY" - >>"$LOG" 2>&1 <<'PYCODE' || die "no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)); this is the real mode, GPU_CHECK_DEVICE=cpu is the dry run"
import sys, torch
if not torch.cuda.is_available():
    sys.exit(1)
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PYCODE
    PROFILE=quick; FLAGSHIP_PROFILE=paper; LIMIT=60; FLAGSHIP_LIMIT=180; JOBS=4; TINY=
    METHODS=${GPU_CHECK_METHODS:-all}
    DATASETS=${GPU_CHECK_DATASETS:-8gaussians,rings,miniboone-small}
else
    PROFILE=smoke; FLAGSHIP_PROFILE=smoke; LIMIT=300; FLAGSHIP_LIMIT=300; JOBS=2; TINY=--tiny
    METHODS=${GPU_CHECK_METHODS:-gaussian,supervised_diffusion}
    DATASETS=${GPU_CHECK_DATASETS:-8gaussians}
fi
FAILED=()

# 2. GPU-marked tests (skipped, not failed, without CUDA)
log "GPU tests"
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py > "$OUT/tests.txt" 2>&1 || FAILED+=("GPU tests (see tests.txt)")
tail -n 1 "$OUT/tests.txt" | tee -a "$LOG"

# 3. the grid through the real CLI (exit 3 = a cell failed: recorded, and the check goes on)
RUN=$WORK/run
COMMON=(--device "$DEVICE" --out "$RUN" --no-progress --jobs "$JOBS" --seeds 1)
log "grid: $METHODS on $DATASETS at $PROFILE"
"$PY" -m harness run "${COMMON[@]}" --profile "$PROFILE" --methods "$METHODS" --datasets "$DATASETS" \
    --time-limit "$LIMIT" >>"$LOG" 2>&1 || FAILED+=("grid at $PROFILE (exit $?)")
FIRST=${DATASETS%%,*}
log "flagship at $FLAGSHIP_PROFILE on $FIRST"
"$PY" -m harness run "${COMMON[@]}" --profile "$FLAGSHIP_PROFILE" --methods supervised_diffusion --datasets "$FIRST" \
    --time-limit "$FLAGSHIP_LIMIT" >>"$LOG" 2>&1 || FAILED+=("flagship at $FLAGSHIP_PROFILE (exit $?)")
EXPECT=$("$PY" - "$METHODS" "$DATASETS" "$PROFILE" "$FIRST" "$FLAGSHIP_PROFILE" <<'PYCODE'
import sys
import methods
meths, dsets, profile, first, flagship_profile = sys.argv[1:]
names = methods.available() if meths == "all" else meths.split(",")
cells = {(m, d, profile) for m in names for d in dsets.split(",")} | {("supervised_diffusion", first, flagship_profile)}
print(len(cells))
PYCODE
) || die "cannot count the grid's cells"
"$PY" -m harness report "$RUN" --format md,csv >>"$LOG" 2>&1 || FAILED+=("report")
cp "$RUN/report.md" "$RUN/results.csv" "$OUT/" 2>>"$LOG" || FAILED+=("report files")

# 4. speed ratios
log "speed ratios"
"$PY" benchmarks/gpu_check.py ratios --device "$DEVICE" $TINY --out "$OUT/ratios.json" >>"$LOG" 2>&1 \
    || FAILED+=("speed ratios (see log.txt)")

# 5. the one-page summary; it fails when a cell is not ok or missing
"$PY" benchmarks/gpu_check.py summary "$RUN" --ratios "$OUT/ratios.json" --tests "$OUT/tests.txt" \
    --expect "$EXPECT" --out "$OUT/summary.md" >>"$LOG" 2>&1 || FAILED+=("cells not ok (see summary.md)")
cat "$OUT/summary.md" 2>/dev/null
if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'gpu_check: FAILED: %s\n' "${FAILED[@]}" | tee -a "$LOG" >&2
    exit 1
fi
log "PASSED; files in $OUT (keep summary.md in benchmarks/results/)"
