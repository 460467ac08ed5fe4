#!/usr/bin/env bash
# The main job on the embedded defaults: built-in ml-100k with 5% low-rating noise, the
# offline `embed` provider for user profiles, LightGCN trained plainly and with the T-CE and
# R-CE denoisers, then one evaluation table. Runs in a few minutes on 2 CPU cores.
set -euo pipefail
WS="${LLMHD_WORKSPACE:-llmhd-workspace}"
EPOCHS="${DEMO_EPOCHS:-30}"
export LLMHD_WORKSPACE="$WS"

llmhd prepare --dataset ml-100k --noise-ratio 0.05 --noise-source low-rating --force
llmhd summarize --dataset ml-100k --provider embed

runs=()
for denoiser in none tce rce; do
  run="$WS/runs/demo-lightgcn-bpr-$denoiser"
  rm -rf "$run"
  llmhd train --dataset ml-100k --backbone lightgcn --objective bpr --denoiser "$denoiser" \
    --epochs "$EPOCHS" --seed 2024 --run-dir "$run"
  runs+=("$run")
done
llmhd evaluate "${runs[@]}"
