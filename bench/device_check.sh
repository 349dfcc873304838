#!/usr/bin/env bash
# One prepared run for a lent GPU (issue 13): correctness first, then the engines side by side.
#
#   run(command="bash bench/device_check.sh", timeout_s=560)      # nothing to carry: only torch is needed
#
# Expected ≈ 5 minutes of the 15 (the grouped baseline is the slow part: ~108 ms a step). Everything lands in ONE
# file, $OUT/device_check_logs.tgz, re-packed after every step, so a run cut short still returns what it did.
#
# The device image has torch but not `datasets`/`mlxtend` (shared/HF_NOTES.md), so the package's __init__ (which
# imports the zoo builder) cannot load there; the population engine needs only networks.py + population.py, which
# this script puts in a shim package. Each step runs under its own timeout; all logs and JSON go into one tarball
# under $OUT, and the table of figures is printed last.
#
# What to expect (to compare with, METHOD.md): a forward + backward pass of the 2464-parameter CNN is ≈ 1.2 MFLOP
# per image, so one step of 1000 CNNs at batch 10 is ≈ 12 GFLOP: 0.2 ms at 60 TFLOP/s fp32. The unfold engine's
# largest tensor, the first layer's im2col matrix, is 1000·10·576·25 floats = 576 MB, written once and read twice
# a step; with the other activations ≈ 3 GB a step: ≈ 0.75 ms at ~4 TB/s. About 100 kernels a step add ~0.5 ms of
# launches. Floor ≈ 1.5 ms a step ≈ 6.7 M image·model steps/s; the issue's target is 3 M (3.3 ms a step); the
# grouped engine measured 92 k (108 ms a step) on an H200 at 61731fc.
set -u
OUT=${OUT:-/tmp/device_check_out}
mkdir -p "$OUT"
LOGS=$(mktemp -d)/device_check
mkdir -p "$LOGS"
SHIM=$(mktemp -d)/shim
mkdir -p "$SHIM/hyperrep_hf/zoo"
cp hyperrep_hf/zoo/networks.py hyperrep_hf/zoo/population.py "$SHIM/hyperrep_hf/zoo/"
touch "$SHIM/hyperrep_hf/__init__.py" "$SHIM/hyperrep_hf/zoo/__init__.py"
export PYTHONPATH=$SHIM
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s)"
    local started=$SECONDS
    timeout "$seconds" "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    echo "rc=$rc seconds=$((SECONDS - started))" >>"$LOGS/$name.log"
    tail -n 4 "$LOGS/$name.log"
    tar czf "$OUT/device_check_logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")"
}

step 00_info 30 sh -c "nvidia-smi; $PY -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), torch.backends.cudnn.version())'"
step 01_unit_tests 120 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not gpu" tests/test_population.py
step 02_device_correctness 90 "$PY" bench/check_population_device.py --device cuda
# the headline: 1000 CNNs at batch 10, 1000 training images (100 steps) per timed epoch, 2 interleaved repeats
step 03_bench_1000 200 "$PY" bench/bench_population.py --device cuda --networks 1000 --images 1000 --eval-images 500 \
    --repeats 2 --out "$LOGS/population_cuda.json"
# the MNIST-HYP case: dropout active (one noise draw per layer and step)
step 04_bench_dropout 90 "$PY" bench/bench_population.py --device cuda --networks 1000 --images 500 --eval-images 250 \
    --repeats 2 --dropout 0.5 --engines channels_last unfold --out "$LOGS/population_cuda_dropout.json"
# a larger population per chunk: does the chip fill up further?
step 05_bench_4000 90 "$PY" bench/bench_population.py --device cuda --networks 4000 --images 500 --eval-images 250 \
    --repeats 2 --engines unfold --out "$LOGS/population_cuda_4000.json"
step 06_profile 60 "$PY" - <<'PYEOF'
import torch
from torch.profiler import ProfilerActivity, profile
from hyperrep_hf.zoo.networks import MNIST_CNN
from hyperrep_hf.zoo.population import NetworkConfig, Population
configs = [NetworkConfig(seed=s, init="kaiming_uniform", bias_init=0.01, learning_rate=3e-4, batch_size=10) for s in range(1000)]
images, labels = torch.randn(200, 1, 28, 28, device="cuda"), torch.randint(0, 10, (200,), device="cuda")
population = Population(MNIST_CNN, configs, "cuda", engine="unfold")
population.train_epoch(images[:20], labels[:20], 1)
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    population.train_epoch(images, labels, 2)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))
PYEOF
echo "== summary"
for f in "$LOGS"/population_cuda*.json; do
    [ -f "$f" ] && "$PY" -c "
import json, sys
d = json.load(open(sys.argv[1])); c = d['cases'][0]
for e, v in c['engines'].items():
    print(f\"{sys.argv[1].split('/')[-1]:32s} {e:14s} {v['train_image_model_steps_per_s']:>12,.0f} img·model/s  {v['ms_per_step']:7.2f} ms/step  eval {v['eval_image_models_per_s']:>12,.0f}/s  peak {v['peak_gib'] or 0:.1f} GiB  x{c.get('speedup_vs_grouped', {}).get(e, float('nan')):.1f}\")
" "$f"
done
grep -h "^FAIL\|checks passed\|check(s) failed" "$LOGS/02_device_correctness.log"
