#!/usr/bin/env bash
# The GPU check, prepared as one script for a lent GPU machine (no internet there):
#   1. a smoke run of training on the demo (`main_NPC.py`, CUDA, bf16 autocast, 1 epoch);
#   2. bench/throughput.py in the paper's setting: ViT-B/32 with random weights, batch 256, amp_bf16
#      (the steps side by side, their phases, the text tower, NPC-batch loading);
#   3. the same steps with --torchcompile (bounded by a timeout: compilation can be slow).
#
#   bash bench/gpu_check.sh fetch   # here, with a package index: wheels the GPU image lacks -> .whl/
#   bash bench/gpu_check.sh run     # there (carry .whl); results go to $OUT (default: bench/results)
#
# The GPU image has torch, torchvision, numpy, scikit-learn, tensorboard, pillow, tqdm, timm and
# huggingface_hub, but not open_clip_torch and ftfy (and wcwidth, which ftfy needs).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4"

case "${1:-run}" in
fetch)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
    ls -l .whl
    ;;
run)
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site
    fi
    out="${OUT:-bench/results}"
    mkdir -p "$out"
    export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu_info.txt"
    python3 -c "import torch, open_clip; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" \
        | tee -a "$out/gpu_info.txt"
    python3 main_NPC.py --device cuda --precision amp_bf16 --epochs 1 --logs_dir /tmp/gpu_check_logs \
        --experiments smoke --no_progress 2>&1 | tee "$out/gpu_smoke.log"
    python3 bench/throughput.py --json > "$out/throughput_gpu.json"
    cat "$out/throughput_gpu.json"
    timeout 300 python3 bench/throughput.py --torchcompile --no_loading --kinds clip,npc,npc_release --json \
        > "$out/throughput_gpu_torchcompile.json" || echo "torchcompile run failed or timed out (exit $?)"
    cat "$out/throughput_gpu_torchcompile.json"
    ;;
*)
    echo "usage: bash bench/gpu_check.sh fetch|run" >&2
    exit 2
    ;;
esac
