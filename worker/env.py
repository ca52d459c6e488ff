"""Reading `CROPWORKER_*` environment variables, for every command that has them.

`cropworker crop` reads its three (model, threads, aspects) through `read`; `cropworker run` and
`demo` read every field of `stream.settings.Settings` through `parse`. Either way a bad value is a
`SettingsError` that names the variable and the value, which `cli.main` prints as one line. This
module sits outside the `stream` package so that the crop command loads nothing of the streaming
worker, and no Kafka client.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import crop
from .errors import CropworkerError, SettingsError

ENV_PREFIX = "CROPWORKER_"

T = TypeVar("T")


def parse(name: str, text: str, parser: Callable[[str], T]) -> T:
    """`text`, the value of `CROPWORKER_{name}`, read by `parser`; a `ValueError` or project
    error from it becomes a `SettingsError` that names the variable and the value."""
    try:
        return parser(text)
    except (ValueError, CropworkerError) as exc:
        raise SettingsError(f"{ENV_PREFIX}{name}={text!r}: {exc}") from exc


def read(
    name: str, parser: Callable[[str], T], default: T, environ: Mapping[str, str] | None = None
) -> T:
    """The `CROPWORKER_{name}` variable read by `parser`, or `default` when it is not set."""
    source = os.environ if environ is None else environ
    key = ENV_PREFIX + name
    return parse(name, source[key], parser) if key in source else default


def argument_type(name: str, parser: Callable[[str], T]) -> Callable[[str], T]:
    """`parser` as an argparse `type`: its `ValueError` or project error is a usage error."""

    def convert(text: str) -> T:
        try:
            return parser(text)
        except (ValueError, CropworkerError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = name  # argparse names the type in its error message
    return convert


def positive_int(text: str) -> int:
    """ "4" -> 4; a `ValueError` for anything else, zero and negatives included."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def parse_aspects(text: str) -> tuple[str, ...]:
    """ "16:9, 1:1" -> ("16:9", "1:1"); raises `AspectError` for a bad entry, `SettingsError`
    for none."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        crop.parse_aspect(name)
    if not names:
        raise SettingsError("at least one aspect ratio is needed")
    return names
