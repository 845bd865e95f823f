#!/usr/bin/env bash
# The GPU check, prepared as one script for a lent GPU machine (no internet there):
#   1. demo training smoke runs on CUDA (bf16 autocast, 1 epoch): main_CLIP.py and main_NPC.py, then
#      `--eval --resume` of each result (evaluation in fp32, the project's default);
#   2. bench/throughput.py in the paper's setting: ViT-B/32 with random weights, batch 256, amp_bf16
#      (CLIP, naive NPC, efficient NPC paper/release, phases, peak memory, the text tower both ways,
#      NPC-batch loading), then the steps again with --torchcompile (bounded by a timeout);
#   3. bench/eval_speed.py: ViT-B/32 evaluation of 5,000 generated 640x480 images x 25,000 captions
#      from JPEG files and from the image cache, and loader images/s with 8 and 16 workers;
#   4. bench/update_size.py: one npc_release and one CLIP step of ViT-B/32 (random weights, batch 256) in the
#      release's fp16 numerics and under amp_bf16, at the release's learning rates: how far each moves the model.
#
#   bash bench/gpu_check.sh fetch   # here, with a package index: wheels the GPU image lacks -> .whl/
#   bash bench/gpu_check.sh run     # there (carry .whl and pre-trained_models); results go to $OUT
#
# `pre-trained_models` carries the demo's base model trained here, so the GPU runs start from the
# same weights as the CPU reference runs (the demo data itself is regenerated, deterministically).
# The CPU rehearsal of the whole script, tiny sizes, no GPU:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 OUT=/tmp/gpu_check bash bench/gpu_check.sh run
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
    out="${OUT:-bench/results/throughput}"
    dev="${GPU_CHECK_DEVICE:-cuda}"
    logs=/tmp/gpu_check_logs
    mkdir -p "$out"
    rm -rf "$logs"
    export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    if [ -n "${GPU_CHECK_QUICK:-}" ]; then  # rehearsal sizes
        prec=fp32; bench_model=(--model npc-micro --batch 16 --rounds 1 --steps 1 --warmup 1 --load_images 8)
        eval_args=(--model npc-micro --images 64 --workers 0,2 --batch 32); train=(--dev_length 100)
        update_args=(--model npc-micro --batch 16)
    else
        prec=amp_bf16; bench_model=(); eval_args=(); train=(); update_args=(--model ViT-B/32 --batch 256)
    fi
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
      python3 -c "import torch, open_clip; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'open_clip', open_clip.__version__)"
    } | tee "$out/gpu_info.txt"
    # Each step is bounded and its failure reported; the next steps still run.
    step() {  # step SECONDS LOG_OR_JSON COMMAND...
        local secs=$1 dest=$2; shift 2
        if [[ $dest == *.json ]]; then
            timeout "$secs" "$@" > "$dest" || echo "FAILED or timed out (exit $?): $*" | tee -a "$out/gpu_smoke.log"
        else
            timeout "$secs" "$@" 2>&1 | tee -a "$dest" || echo "FAILED or timed out: $*" | tee -a "$out/gpu_smoke.log"
        fi
    }
    # 0. the demo data (regenerated) and its base model (carried, else pretrained here), and its table
    step 600 "$out/gpu_smoke.log" python3 main_CLIP.py --device "$dev" --eval --logs_dir "$logs" \
        --experiments base --no_progress
    # 1. training smoke runs and the `--eval --resume` of their best checkpoints
    for script in main_CLIP main_NPC; do
        exp="smoke_${script#main_}"
        step 240 "$out/gpu_smoke.log" python3 "$script.py" --device "$dev" --precision "$prec" --epochs 1 \
            --logs_dir "$logs" --experiments "$exp" --no_progress "${train[@]}"
        step 120 "$out/gpu_smoke.log" python3 "$script.py" --device "$dev" --eval --no_progress \
            --resume "$logs/$exp/checkpoints/best.pt" --logs_dir "$logs" --experiments "eval_$exp"
    done
    # 2. the training steps
    step 300 "$out/throughput_gpu.json" python3 bench/throughput.py --device "$dev" "${bench_model[@]}" --json
    step 300 "$out/throughput_gpu_torchcompile.json" python3 bench/throughput.py --device "$dev" \
        "${bench_model[@]}" --torchcompile --no_loading --kinds clip,npc,npc_release --json
    # 3. evaluation at MSCOCO 5K's size and loading with workers
    step 300 "$out/eval_speed_gpu.json" python3 bench/eval_speed.py --device "$dev" "${eval_args[@]}" --json
    # 4. the update size of one step in the release's fp16 numerics and under amp_bf16
    step 120 "$out/update_size_gpu.json" python3 bench/update_size.py --device "$dev" "${update_args[@]}" --json
    for f in "$out"/*.json; do echo "== $f"; cat "$f"; done
    ;;
*)
    echo "usage: bash bench/gpu_check.sh fetch|run" >&2
    exit 2
    ;;
esac
