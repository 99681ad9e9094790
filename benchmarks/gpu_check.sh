#!/usr/bin/env bash
# The GPU check of benchmarks/RESULTS.md, for a lent device machine (one short run; see DEVELOPERS.md):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. meta_step.py on CUDA: small CNN and ResNet-18 at 32 px, ResNet-50 at 224 px; plain step vs EMLC K=1 and
#    K=5, paper and recipe configurations, with the one-step breakdown and peak GPU memory (JSON + table).
# 2. A short end-to-end run: `emlc demo --device cuda` (the packaged 2,000-image set): images/s, the time
#    breakdown of summary.json, label accuracy before/after, peak GPU memory.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/emlc_gpu_check}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python -c "import emlc_cli" 2>/dev/null || python -m pip install -q --no-deps --no-build-isolation -e . \
  || { echo "emlc is not importable and could not be installed" >&2; exit 1; }
python - <<'PY' | tee "$out/versions.txt"
import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
timeout 420 python benchmarks/meta_step.py --device cuda --threads 0 --rounds 3 --repeats 5 --ks 1,5 \
  --models small_cnn:32,resnet18,resnet50@224 --json "$out/meta_step_cuda.json" 2>&1 | tee "$out/meta_step_cuda.txt"
rm -rf "$out/demo_run"
timeout 240 python -m emlc_cli demo --device cuda --out "$out/demo_run" 2>&1 | tail -25 | tee "$out/demo.txt"
python - "$out" <<'PY' | tee "$out/demo_timing.txt"
import json, sys
s = json.load(open(f"{sys.argv[1]}/demo_run/run/summary.json"))
print("images/s", s["images_per_s"], "peak GPU memory GB", s.get("peak_device_memory_gb"))
print(json.dumps(s["timing"], indent=1))
PY
