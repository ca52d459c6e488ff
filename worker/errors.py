"""The exception tree of cropworker.

    CropworkerError                  root: catch this to catch everything the project raises
    ├── ImageError                   an input image was rejected; `.code` names the reason
    │   ├── EmptyImageError          zero bytes
    │   ├── UnsupportedFormatError   not a JPEG, PNG, WebP, GIF, BMP or TIFF
    │   ├── CorruptImageError        the header or the data cannot be decoded (truncated, malformed)
    │   ├── ImageTooLargeError       over the byte or pixel limit (checked before decoding)
    │   ├── ImageTooComplexError     decoding would cost far more than the size says (JPEG scans)
    │   └── DecoderCrashedError      the decoder's child process died on it (decode isolation)
    ├── AspectError                  an aspect ratio that is not "W:H" with positive numbers
    ├── ModelError                   a model file is missing, malformed or not loadable
    ├── SettingsError                a worker setting (flag or CROPWORKER_* variable) is invalid
    ├── EventError                   an upload event is not valid JSON or breaks its schema
    │   └── KeepError                a keep-region is malformed or outside the image as displayed
    ├── FetchError                   an image reference could not be fetched; `.attempts` made
    │   └── FetchForbiddenError      the reference is outside what the settings allow
    ├── PrepareTimeoutError          fetching and decoding one event outlasted `prepare_timeout_s`
    ├── BrokerError                  Kafka failed; `.kafka_code` / `.kafka_name` keep librdkafka's
    │   └── PublishError             a result could not be delivered (it is dead-lettered instead)
    ├── InternalError                a bug met while preparing one event (dead-lettered, logged)
    └── GpuError                     the GPU path failed (CUDA or TensorRT)
        ├── GpuUnavailableError      no driver, no device, or no CUDA/TensorRT bindings installed
        ├── CudaError                a CUDA runtime call failed; `.call`, `.cuda_code`, `.cuda_name`
        │   └── GpuOutOfMemoryError  cudaErrorMemoryAllocation
        ├── TensorRTError            TensorRT refused to load, shape or run an engine
        │   └── EngineBuildError     the ONNX did not parse or the engine did not build; `.errors`
        └── EngineMismatchError      an engine's sidecar does not match this GPU, TensorRT or model

Library code raises these; only `cli.main` turns them into messages and exit codes.
"""

from __future__ import annotations


class CropworkerError(Exception):
    """Root of every error raised by cropworker."""

    code = "error"


class ImageError(CropworkerError, ValueError):
    """An input image was rejected. `code` is a stable machine-readable reason."""

    code = "image_error"


class EmptyImageError(ImageError):
    code = "empty"


class UnsupportedFormatError(ImageError):
    code = "unsupported_format"


class CorruptImageError(ImageError):
    code = "corrupt"


class ImageTooLargeError(ImageError):
    code = "too_large"


class ImageTooComplexError(ImageError):
    """Within the byte and pixel limits, but the decoder would spend far longer on it than the
    size suggests: a progressive JPEG with more scans than any encoder writes (each scan makes
    the decoder walk every block of the image again). Checked from the header, before decoding."""

    code = "too_complex"


class DecoderCrashedError(ImageError):
    """The decoder's child process died on this image (`decode_isolation`): most likely a
    decoder bug the image triggers. The worker itself carries on."""

    code = "decoder_crashed"


class AspectError(CropworkerError, ValueError):
    code = "bad_aspect"


class ModelError(CropworkerError):
    code = "model_error"


class SettingsError(CropworkerError, ValueError):
    code = "bad_setting"


class EventError(CropworkerError, ValueError):
    """An upload event was rejected (malformed JSON, wrong schema, invalid field)."""

    code = "bad_event"


class KeepError(EventError):
    """A keep-region is not a box [x, y, w, h] (w, h > 0) or a point [x, y] of finite numbers
    with x, y >= 0, or it reaches outside the image as displayed, which only decoding can tell.
    Its code stays `bad_event`: the event asked for the impossible, whenever that shows."""


class FetchError(CropworkerError):
    """An image reference could not be fetched. `retryable` says whether trying again may help
    (timeouts, connection errors, HTTP 5xx and 429); `attempts` is how many tries were made."""

    code = "fetch_failed"

    def __init__(self, message: str, *, retryable: bool = False, attempts: int = 1) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.attempts = attempts


class FetchForbiddenError(FetchError):
    """The scheme, host, address or path of a reference is not allowed by the settings."""

    code = "fetch_forbidden"


class PrepareTimeoutError(CropworkerError):
    """Fetching and decoding one event took longer than `prepare_timeout_s`. The worker's
    watchdog dead-letters it and leaves its thread behind (stream/pool.py); with decode
    isolation the decoder kills its child process and raises this itself (stream/isolation.py)."""

    code = "timeout"


class BrokerError(CropworkerError):
    """A Kafka client error that the worker cannot handle by itself."""

    code = "broker_error"

    def __init__(self, message: str, *, kafka_code: int = -1, kafka_name: str = "") -> None:
        super().__init__(message)
        self.kafka_code = kafka_code
        self.kafka_name = kafka_name


class PublishError(BrokerError):
    """The broker did not acknowledge a result within the delivery timeout: the event is
    dead-lettered instead (its `error.type` header says `publish_failed`)."""

    code = "publish_failed"


class InternalError(CropworkerError):
    """An unexpected failure while preparing one event (a bug, or a decoder process that did not
    start): that event is dead-lettered and the partition keeps flowing."""

    code = "internal_error"


class GpuError(CropworkerError):
    """Root of the GPU path's errors (CUDA and TensorRT)."""

    code = "gpu_error"


class GpuUnavailableError(GpuError):
    """No usable GPU: no driver, no device, or the CUDA/TensorRT bindings are not installed. The
    worker falls back to the CPU on this error unless told to require a GPU."""

    code = "gpu_unavailable"


class CudaError(GpuError):
    """A CUDA runtime call returned an error. `call` names the function; `cuda_code` and
    `cuda_name` are the runtime's own (`cudaError_t`)."""

    code = "cuda_error"

    def __init__(self, message: str, *, call: str = "", cuda_code: int = -1, cuda_name: str = ""):
        super().__init__(message)
        self.call = call
        self.cuda_code = cuda_code
        self.cuda_name = cuda_name


class GpuOutOfMemoryError(CudaError):
    code = "gpu_out_of_memory"


class TensorRTError(GpuError):
    """TensorRT refused an operation (deserialize, create a context, set a shape, execute). The
    message carries what TensorRT logged at error severity."""

    code = "tensorrt_error"


class EngineBuildError(TensorRTError):
    """The ONNX parser or the builder failed; `errors` lists every parser error."""

    code = "engine_build_failed"

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class EngineMismatchError(GpuError):
    """An engine file does not match this worker: its sidecar is missing or names another GPU,
    TensorRT version, ONNX model or input range. Rebuild it with `cropworker build-engine`."""

    code = "engine_mismatch"


def error_codes() -> set[str]:
    """Every `code` of the tree: the error types a dead letter (and its metric) can carry."""
    codes, todo = set(), [CropworkerError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo += cls.__subclasses__()
    return codes
