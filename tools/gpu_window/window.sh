#!/usr/bin/env bash
# THE one command of a GPU window (see tools/gpu_window/README.md). From the repository root:
#
#   bash tools/gpu_window/window.sh [--plan tools/gpu_window/plan.toml] [--seconds N]
#
# with the device tool's run call: carry [".stage", ".whl"], timeout_s >= seconds + 15.
# 1. installs the carried wheels (.whl/*.whl) into /tmp/site (the device README's recipe);
# 2. prints the GPU (nvidia-smi);
# 3. hands over to window.py: train the plan's runs, stop them before their budgets, export,
#    pack $OUT. Everything printed is also written to $OUT/window.log.
#
# Environment: OUT (required; the device sets it), PYTHON (default python3), SITE (/tmp/site).
set -uo pipefail
T0=$(date +%s.%N)
cd "$(dirname "$0")/../.." || exit 2
if [ -z "${OUT:-}" ]; then
  echo "window.sh: OUT is not set (the folder whose files come back)" >&2
  exit 2
fi
mkdir -p "$OUT"
exec > >(tee -a "$OUT/window.log") 2>&1
TEE=$!
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
echo "window.sh: start $(date -u +%Y-%m-%dT%H:%M:%SZ) in $PWD"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "window.sh: wheel install failed"; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "window.sh: installed $(ls .whl/*.whl | wc -l) wheel(s) into $SITE"
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "window.sh: no nvidia-smi (CPU dry run?)"
fi
export PYTHONUNBUFFERED=1
"$PY" tools/gpu_window/window.py --t0 "$T0" "$@"
code=$?
echo "window.sh: done with exit code $code after $(awk "BEGIN{printf \"%.0f\", $(date +%s.%N) - $T0}") s"
exec >&- 2>&-  # let tee see the end of its input and finish window.log before we return
wait "$TEE" 2>/dev/null
exit $code
