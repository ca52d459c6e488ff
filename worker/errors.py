"""The exception tree of cropworker.

    CropworkerError                  root: catch this to catch everything the project raises
    ├── ImageError                   an input image was rejected; `.code` names the reason
    │   ├── EmptyImageError          zero bytes
    │   ├── UnsupportedFormatError   not a JPEG, PNG, WebP, GIF, BMP or TIFF
    │   ├── CorruptImageError        the header or the data cannot be decoded (truncated, malformed)
    │   └── ImageTooLargeError       over the byte or pixel limit (checked before decoding)
    ├── AspectError                  an aspect ratio that is not "W:H" with positive numbers
    ├── ModelError                   a model file is missing, malformed or not loadable
    ├── SettingsError                a worker setting (flag or CROPWORKER_* variable) is invalid
    ├── EventError                   an upload event is not valid JSON or breaks its schema
    ├── FetchError                   an image reference could not be fetched; `.attempts` made
    │   └── FetchForbiddenError      the reference is outside what the settings allow
    └── BrokerError                  Kafka failed; `.kafka_code` / `.kafka_name` keep librdkafka's

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


class AspectError(CropworkerError, ValueError):
    code = "bad_aspect"


class ModelError(CropworkerError):
    code = "model_error"


class SettingsError(CropworkerError, ValueError):
    code = "bad_setting"


class EventError(CropworkerError, ValueError):
    """An upload event was rejected (malformed JSON, wrong schema, invalid field)."""

    code = "bad_event"


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


class BrokerError(CropworkerError):
    """A Kafka client error that the worker cannot handle by itself."""

    code = "broker_error"

    def __init__(self, message: str, *, kafka_code: int = -1, kafka_name: str = "") -> None:
        super().__init__(message)
        self.kafka_code = kafka_code
        self.kafka_name = kafka_name
