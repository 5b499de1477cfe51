#!/usr/bin/env bash
# Train the shipped default model on the CPU: configs/cpu-default.toml, about 2 hours on 2 cores.
#
#   bash tools/train_cpu_default.sh [RUN_DIR] [extra derain train options, e.g. --resume]
#
# Rainy photos: rain-real/ and syn-train/rainy/ of the shared data (linked into one folder,
# RUN_DIR/.data/rainy, because `derain train` takes one rainy folder); clean photos: clean/.
# bench-dev is never used. DERAIN_SHARED overrides where the shared data lives.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${DERAIN_SHARED:-../shared/data}
run=${1:-runs/cpu-default}
shift || true
rainy="$run/.data/rainy"
mkdir -p "$rainy"
for f in "$shared"/rain-real/*; do ln -sfn "$(realpath "$f")" "$rainy/$(basename "$f")"; done
for f in "$shared"/syn-train/rainy/*; do
  ln -sfn "$(realpath "$f")" "$rainy/syntrain-$(basename "$f")"
done
exec derain train "$rainy" --clean "$shared/clean" --config configs/cpu-default.toml --out "$run" "$@"
