"""The GPU path: TensorRT engines fed with micro-batches through CUDA, PyTorch on the GPU for
machines without TensorRT, and nvJPEG decoding.

    probe.py        is there a usable GPU? (cuda-bindings; never touches TensorRT)
    cuda.py         typed wrappers over the CUDA runtime: error codes become exceptions
    trtlib.py       importing TensorRT (full or lean) and capturing what it logs
    sidecar.py      the JSON written next to an engine, checked before the engine is loaded
    engine.py       `cropworker build-engine`: ONNX -> strongly typed network -> engine
    trt_backend.py  `TensorRTBackend`, the `Backend` protocol on a GPU
    onnx_torch.py   a small ONNX interpreter on PyTorch, for the operators of the shipped models
    torch_backend.py `TorchBackend` (backend "cuda"): that interpreter on a GPU, in CUDA graphs
    nvjpeg.py       JPEG decoding on the GPU (nvidia-nvimgcodec) behind the decode interface
    select.py       which backend and decoder a worker gets, and the CPU fallback

Nothing here imports `tensorrt`, `tensorrt_lean`, `cuda`, `torch` or `nvidia.nvimgcodec` at
import time (onnx_torch.py does, and only torch_backend.py imports it, once PyTorch is known to
be there): each is imported inside the function that needs it, and the classes that drive CUDA
take the module as an argument, which is how the tests run all of this on machines without a GPU.
"""
