"""The exception tree of cropworker.

    CropworkerError                  root: catch this to catch everything the project raises
    ├── ImageError                   an input image was rejected; `.code` names the reason
    │   ├── EmptyImageError          zero bytes
    │   ├── UnsupportedFormatError   not a JPEG, PNG, WebP, GIF, BMP or TIFF
    │   ├── CorruptImageError        the header or the data cannot be decoded (truncated, malformed)
    │   └── ImageTooLargeError       over the byte or pixel limit (checked before decoding)
    ├── AspectError                  an aspect ratio that is not "W:H" with positive numbers
    └── ModelError                   a model file is missing, malformed or not loadable

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
