#!/usr/bin/env bash
# GPU check: on a machine with an NVIDIA GPU and the project installed (make test
# did it), run the GPU-marked tests, then the flagship's `paper` profile beside the
# baselines on the 2-D datasets and miniboone-small, and write the report.
# Budget: under 8 minutes on one H200-class GPU. Baselines use their `quick`
# profile here (their `paper` profiles train for 200k steps, GPU-hours in all);
# every cell has a time limit so the script always finishes.
#
#   DENSITYBENCH_DATA=/path/to/data scripts/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-reports/gpu-check}
export PYTHONUNBUFFERED=1

"$PY" - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU visible to torch")
print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
"$PY" -m pytest -m gpu -q tests/test_gpu.py
DATASETS=8gaussians,checkerboard,rings,circles,moons,swissroll,pinwheel,2spirals,miniboone-small
"$PY" -m harness run --device cuda --profile paper --methods supervised_diffusion \
    --datasets "$DATASETS" --time-limit 120 --out "$OUT" --no-progress
"$PY" -m harness run --device cuda --profile quick \
    --methods gaussian,kde,maf,realnvp,nsf_ar,nsf_c,gan,vae,score_diffusion,training_free_ode \
    --datasets "$DATASETS" --time-limit 60 --out "$OUT" --no-progress
"$PY" benchmarks/bench_score.py || true
echo "report: $OUT/report.md"
