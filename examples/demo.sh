#!/usr/bin/env bash
# The main job on the embedded defaults: built-in ml-100k with 5% low-rating noise, user
# profiles from the offline `embed` provider, LightGCN trained plainly (BPR), with T-CE and
# with the llmhd denoiser, then one evaluation table with the noise-detection numbers.
# A few minutes on 2 CPU cores. DEMO_EPOCHS changes the epoch budget.
set -euo pipefail
WS="${LLMHD_WORKSPACE:-llmhd-workspace}"
EPOCHS="${DEMO_EPOCHS:-30}"
export LLMHD_WORKSPACE="$WS"

llmhd prepare --dataset ml-100k --noise-ratio 0.05 --noise-source low-rating --force
llmhd summarize --dataset ml-100k --provider embed

runs=()
train() {  # name, then train flags
  local run="$WS/runs/demo-$1"; shift
  rm -rf "$run"
  llmhd train --dataset ml-100k --backbone lightgcn --objective bpr --epochs "$EPOCHS" --seed 2024 --run-dir "$run" "$@"
  runs+=("$run")
}
train bpr --denoiser none
# The schedules run on training iterations: ml-100k has ~50 batches an epoch, so alpha and
# num-gradual are scaled down from the paper's Amazon-books values to act within the demo.
train tce --denoiser tce --drop-rate 0.05 --num-gradual 500
train llmhd --denoiser llmhd --provider embed --alpha 500 --eps-l-max 0.05 --eps-v 0.5
llmhd evaluate "${runs[@]}"
