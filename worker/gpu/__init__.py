"""The GPU path: TensorRT engines fed with micro-batches through CUDA, and nvJPEG decoding.

    probe.py        is there a usable GPU? (cuda-bindings; never touches TensorRT)
    cuda.py         typed wrappers over the CUDA runtime: error codes become exceptions
    trtlib.py       importing TensorRT (full or lean) and capturing what it logs
    sidecar.py      the JSON written next to an engine, checked before the engine is loaded
    engine.py       `cropworker build-engine`: ONNX -> strongly typed network -> engine
    trt_backend.py  `TensorRTBackend`, the `Backend` protocol on a GPU
    nvjpeg.py       JPEG decoding on the GPU (nvidia-nvimgcodec) behind the decode interface
    select.py       which backend and decoder a worker gets, and the CPU fallback

Nothing here imports `tensorrt`, `tensorrt_lean`, `cuda` or `nvidia.nvimgcodec` at import time:
each is imported inside the function that needs it, and every entry point also takes the module
as an argument, which is how the tests run all of this on machines without a GPU.
"""
