#!/usr/bin/env bash
# GPU benchmark of issues 5 and 16: 512² and 1024², batch 1 and 8, TF32 vs bf16 convolutions,
# XLA off/on; a default run (precision and XLA auto, convergence stopping) batched; one tiled pair.
#
#   benchmarks/gpu.sh [--smoke] [--weights VGG19.mat] [--json out.json] [gpu.py flags …]
#
# Needs a Python with stylebatch's dependencies and tensorflow[and-cuda] (TensorFlow 2.16+,
# CUDA 12 libraries from pip), and an NVIDIA GPU. --smoke: tiny sizes and a few iterations,
# runs on a CPU too. Python: $PYTHON, else ./.venv/bin/python, else python3.
# Exit codes: 0 done; 3 no TensorFlow; 4 no GPU (without --smoke); 5 stylecore not importable.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x .venv/bin/python ]]; then py=.venv/bin/python; else py=python3; fi
fi
smoke=0
for arg in "$@"; do [[ "$arg" == "--smoke" ]] && smoke=1; done
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if ! version="$("$py" -c 'import tensorflow as tf; print(tf.__version__)' 2>/dev/null | tail -n 1)"; then
    echo "gpu.sh: TensorFlow is not installed for $py." >&2
    echo "gpu.sh: on the GPU machine: $py -m pip install -e . 'tensorflow[and-cuda]'" >&2
    exit 3
fi
echo "gpu.sh: TensorFlow $version ($py)"

gpus="$("$py" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null | tail -n 1)"
if [[ "$gpus" == "0" ]]; then
    if [[ $smoke == 0 ]]; then
        echo "gpu.sh: TensorFlow sees no GPU: a CPU-only wheel, or CUDA 12 libraries missing" >&2
        echo "gpu.sh: (install 'tensorflow[and-cuda]'; nvidia-smi must work). --smoke runs on CPU." >&2
        exit 4
    fi
    echo "gpu.sh: no GPU; smoke test on the CPU"
elif command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

if ! "$py" -c 'import stylecore.stylize' 2>/dev/null; then
    echo "gpu.sh: stylecore is not importable with $py: run $py -m pip install -e . first" >&2
    exit 5
fi

exec "$py" benchmarks/gpu.py "$@"
