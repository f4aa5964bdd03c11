#!/usr/bin/env bash
# The GPU benchmark in one go, ~9 minutes on one H200: the JAX suite (gpu_suite.py, 300 s), the
# PyTorch peers on the same shapes (torch_peers.py, 210 s), then both side by side. Everything
# lands in $OUT (default runs/gpu_bench): table.md (the three tables), jax.json, torch.json,
# env.txt, and the two logs.
#   bash benchmarks/gpu_wheels.sh              # first, where PyPI is reachable: fills .whl/
#   bash benchmarks/gpu_run.sh                 # on the GPU machine, from the working tree
#   bash benchmarks/gpu_run.sh --smoke         # dry run on any CPU: tiny shapes, minutes
# PYTHON runs the suite and TORCH_PYTHON the peers (both default: python3, which holds jax and
# torch on the GPU image); SUITE_BUDGET_S and PEERS_BUDGET_S set the two time budgets.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_bench}
PY=${PYTHON:-python3}
TORCH_PY=${TORCH_PYTHON:-$PY}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then  # wheels the image lacks (gpu_wheels.sh)
  site=${TMPDIR:-/tmp}/aigc_jax_site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" .whl/*.whl || exit 1
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{
  date -u; uptime
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import sys, jax, jaxlib, flax, optax, orbax.checkpoint as o
print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax',
      flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__)" 2>&1
  "$TORCH_PY" -c "import torch; print('torch', torch.__version__, torch.version.cuda)" 2>&1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

"$PY" benchmarks/gpu_suite.py --budget_s="${SUITE_BUDGET_S:-300}" --json="$OUT/jax.json" "$@" \
    2> "$OUT/jax.log" | tee "$OUT/jax.md"
"$TORCH_PY" benchmarks/torch_peers.py --budget_s="${PEERS_BUDGET_S:-210}" \
    --json="$OUT/torch.json" "$@" 2> "$OUT/torch.log" | tee "$OUT/torch.md"
{
  cat "$OUT/env.txt"; echo; cat "$OUT/jax.md"; echo; cat "$OUT/torch.md"; echo
  echo "Side by side (MFU of both from the JAX row's FLOPs per step):"
  "$PY" benchmarks/suite_rows.py "$OUT/jax.json" "$OUT/torch.json"
} > "$OUT/table.md" 2>&1
rm -f "$OUT/jax.md" "$OUT/torch.md"
echo; sed -n '/^Side by side/,$p' "$OUT/table.md"; echo "(all of it: $OUT/table.md)"
