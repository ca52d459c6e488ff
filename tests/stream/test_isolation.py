"""Decoding in child processes: the same images and errors as in-process, and a decoder that
crashes or hangs costs its upload only."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest

from cropworker import errors
from cropworker.decode import DecodedImage, DecodeLimits, decode_image
from cropworker.stream import app
from cropworker.stream.isolation import ProcessDecoder
from cropworker.stream.logs import _FIELDS
from cropworker.stream.settings import Settings
from tests.images import photo

LONG_SIDE = 192
CRASH, HANG, BUG = b"crash me", b"hang me", b"bug me"


def fragile_decode(
    data: bytes, long_side: int = LONG_SIDE, limits: DecodeLimits = DecodeLimits()
) -> DecodedImage:
    """decode_image, but a segfault, a hang or a bug on the marker inputs (runs in the child)."""
    if data == CRASH:
        os.kill(os.getpid(), signal.SIGSEGV)
    if data == HANG:
        time.sleep(3600)
    if data == BUG:
        raise KeyError("a bug")
    return decode_image(data, long_side, limits)


class ExitsWhenUnpickled:
    """An argument that ends the child with exit status 3 as it unpickles its arguments, before
    it can say it is ready."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return os._exit, (3,)


@pytest.fixture
def decoder() -> Iterator[ProcessDecoder]:
    d = ProcessDecoder(fragile_decode, timeout_s=5.0)
    yield d
    d.close()


def test_decodes_as_in_process_and_keeps_the_typed_errors(decoder: ProcessDecoder) -> None:
    for name in ("coffee.jpg", "camera.png", "rocket_exif6.jpg"):
        got, expected = decoder(photo(name)), decode_image(photo(name), LONG_SIDE)
        assert (got.width, got.height, got.format) == (
            expected.width,
            expected.height,
            expected.format,
        )
        assert np.array_equal(got.rgb, expected.rgb), name
    with pytest.raises(errors.CorruptImageError):
        decoder(photo("coffee.jpg")[:3000])
    with pytest.raises(errors.UnsupportedFormatError):
        decoder(b"<html></html>")


def test_every_image_error_survives_the_pipe() -> None:
    """What a child raises reaches the worker as the same class and message."""
    kinds = [errors.ImageError, *errors.ImageError.__subclasses__()]
    for kind in kinds:
        back = pickle.loads(pickle.dumps(kind("why")))
        assert type(back) is kind and str(back) == "why" and back.code == kind.code


def test_a_crash_fails_only_its_image(decoder: ProcessDecoder) -> None:
    decoder(photo("chelsea.jpg"))
    with pytest.raises(errors.DecoderCrashedError, match="SIGSEGV"):
        decoder(CRASH)
    assert decoder(photo("chelsea.jpg")).format == "jpeg"  # a new child took over


def test_a_hang_is_killed_at_the_timeout() -> None:
    decoder = ProcessDecoder(fragile_decode, timeout_s=1.0)
    try:
        decoder(photo("chelsea.jpg"))  # the child is up: the timeout measures the decode alone
        start = time.monotonic()
        with pytest.raises(errors.PrepareTimeoutError):
            decoder(HANG)
        assert time.monotonic() - start < 10
        assert decoder(photo("chelsea.jpg")).format == "jpeg"
    finally:
        decoder.close()


def test_a_bug_in_the_decoder_is_an_internal_error_with_its_traceback_logged(
    decoder: ProcessDecoder, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(errors.InternalError, match="KeyError"):
        decoder(BUG)
    (record,) = [r for r in caplog.records if r.name == "cropworker.stream.isolation"]
    assert record.levelname == "ERROR"
    assert "in fragile_decode" in getattr(record, _FIELDS)["exception"]  # the child's traceback
    assert decoder(photo("chelsea.jpg")).format == "jpeg"  # the same child carries on


def test_a_child_that_does_not_start_is_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    decoder = ProcessDecoder(partial(fragile_decode, limits=ExitsWhenUnpickled()), timeout_s=5.0)
    try:
        with pytest.raises(errors.InternalError, match=r"did not start \(exit status 3\)"):
            decoder(photo("chelsea.jpg"))
        assert any("did not start" in r.getMessage() for r in caplog.records)
    finally:
        decoder.close()


def test_each_thread_has_a_child_of_its_own(decoder: ProcessDecoder) -> None:
    """A crash in one thread's child does not fail another thread's decode."""
    results: dict[str, object] = {}

    def run(name: str, data: bytes) -> None:
        try:
            results[name] = decoder(data).width
        except errors.CropworkerError as exc:
            results[name] = exc.code

    threads = [
        threading.Thread(target=run, args=("good", photo("coffee.jpg"))),
        threading.Thread(target=run, args=("crash", CRASH)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {
        "good": decode_image(photo("coffee.jpg"), LONG_SIDE).width,
        "crash": "decoder_crashed",
    }


def test_partial_of_decode_image_is_what_the_worker_sends() -> None:
    decoder = ProcessDecoder(partial(decode_image, long_side=256), timeout_s=30)
    try:
        assert max(decoder(photo("coffee.jpg")).rgb.shape[:2]) == 256
    finally:
        decoder.close()


def test_a_child_that_died_while_idle_is_not_blamed_on_the_next_image(
    decoder: ProcessDecoder,
) -> None:
    decoder(photo("chelsea.jpg"))
    child = decoder._local.child
    child.process.kill()  # as the OOM killer would
    child.process.join(5)
    assert decoder(photo("chelsea.jpg")).format == "jpeg"


@pytest.mark.parametrize("on", [False, True])
def test_the_setting_decides_where_the_worker_decodes(on: bool) -> None:
    service = app.build(Settings(decode_isolation=on, metrics_port=0, metrics_host="127.0.0.1"))
    try:
        assert isinstance(service.worker.cropper.decoder, ProcessDecoder) == on
    finally:
        service.close()
