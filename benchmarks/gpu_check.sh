#!/usr/bin/env bash
# One short pass over the CUDA code paths, for a lent GPU machine (see benchmarks/README.md):
#   1. the test suite with device "auto" resolving to CUDA (browser tests left out),
#   2. the demo super-resolution experiment with its device switched to cuda,
#   3. the style-training benchmark on CUDA (autocast + channels-last vs the bare loop).
# Logs go to $OUT (or ./gpu-check). Each part has its own time limit so one hang cannot eat the rest.
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/env.txt"

timeout "${TESTS_S:-300}" python3 -m pytest -q -p no:cacheprovider -m "not browser" tests > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?"; tail -n 25 "$OUT/pytest.log"

sed 's/device: cpu/device: cuda/' configs/demo/super_resolution.yaml > /tmp/sr-cuda.yaml
start=$(date +%s)
timeout "${EXPERIMENT_S:-150}" python3 -m imgsteal experiment run /tmp/sr-cuda.yaml --out /tmp/exp-sr-cuda > "$OUT/experiment.log" 2>&1
echo "experiment rc=$? in $(( $(date +%s) - start )) s"
tr '\r' '\n' < "$OUT/experiment.log" | grep -v "step/s\|it/s" | tail -n 15
cp /tmp/exp-sr-cuda/summary.csv /tmp/exp-sr-cuda/table6.md "$OUT/" 2>/dev/null

timeout "${BENCH_S:-90}" python3 benchmarks/bench_style_training.py --device cuda --size 128 --batch 8 --steps 20 --rounds 2 > "$OUT/bench_style.log" 2>&1
echo "bench rc=$?"; tail -n 12 "$OUT/bench_style.log"
