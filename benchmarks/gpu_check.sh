#!/usr/bin/env bash
# One prepared GPU check, finished within 8 minutes: the CUDA plumbing end to end, TensorRT
# engines built and timed per batch size (images/s), their outputs against ONNX Runtime on the
# CPU, GPU JPEG decoding. See benchmarks/README.md for what it needs and what it found.
#
#   bash benchmarks/gpu_check.sh          # results in $OUT (else out/gpu_check)
#
# The GPU machines have no network: Python wheels they lack (tensorrt, tensorrt-lean,
# cuda-bindings, nvidia-nvimgcodec, nvidia-nvjpeg) are installed from wheels/ when it exists,
# and only from there. Exit status: 0 passed, 1 a check failed, 3 no GPU, 124 out of time.
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

timeout --kill-after=10 390 "$python" benchmarks/gpu_check.py --out "$out_dir" --budget-s 330 \
    2>&1 | tee "$out_dir/gpu_check.log"
status=${PIPESTATUS[0]}
echo "gpu_check: exit $status after $(($(date +%s) - started)) s; results in $out_dir"
exit "$status"
