#!/usr/bin/env bash
# A short probe of the CPU default's supervised phase, scored the way docs/training.md scores it.
#
#   bash bench/supervised_probe.sh RUN_DIR STEPS [--set KEY=VALUE ...]
#
# Trains configs/cpu-default.toml (on the default model's data, docs/training.md) for
# STEPS steps of synthetic supervision alone, with the given overrides, then prints
#   1. derain eval on bench-dev (Y-PSNR / SSIM / cast against the rainy input; never trained on)
#   2. the mean NIQE of all 156 rain-real photos against the input's (a subset misleads)
# Example (the probe table's "norm none + refine 16, mixed, L1, 300 steps" row):
#   bash bench/supervised_probe.sh runs/p5 300 --set losses.synthetic_loss=l1 \
#     --set 'model.generator_hparams={output="subtract_rain", norm="none", refine=16}'
# About 5 min of training and 2 min of scoring on 2 CPU cores. DERAIN_SHARED: where the shared
# data lives (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?RUN_DIR}
steps=${2:?STEPS}
shift 2
shared=${DERAIN_SHARED:-../shared/data}
derain train "$shared/rain-real" "$shared/syn-train/rainy" --clean "$shared/clean" \
  --config configs/cpu-default.toml --out "$run" --steps "$steps" \
  --set "losses.synthetic_only_steps=$steps" --set train.checkpoint_every="$steps" \
  --set train.sample_every=0 "$@"
derain eval --rainy "$shared/bench-dev/rainy" --clean "$shared/bench-dev/clean" \
  --weights "$run/G_B.safetensors" --no-niqe
derain eval --rainy "$shared/rain-real" --weights "$run/G_B.safetensors"
