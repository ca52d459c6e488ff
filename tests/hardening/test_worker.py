"""The hostile corpus through one worker against the real (embedded) broker: every hostile event
is dead-lettered with its error type, every good one gets its result, nothing is lost, and the
worker is still running and still answering at the end."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from cropworker.backend import OnnxBackend
from cropworker.demo.broker import EmbeddedBroker
from cropworker.pipeline import Cropper
from cropworker.stream.events import upload_event
from cropworker.stream.fetch import Fetcher, FetchPolicy, resolve
from cropworker.stream.isolation import ProcessDecoder
from tests.hardening import corpus
from tests.hardening.servers import Server, http_response
from tests.stream.conftest import Reader, RunningWorker, Topics, send, settings_for, small_jpeg
from tests.stream.test_isolation import CRASH, fragile_decode

pytestmark = pytest.mark.broker

NOW_MS = int(time.time() * 1000)
MAX_IMAGE_BYTES = 200_000
Message = tuple[bytes, bytes | None]


@pytest.fixture
def counting() -> Iterator[Server]:
    """An image server on loopback that every reference in the stream tries to reach."""
    server = Server(lambda conn, stopped: conn.sendall(http_response(small_jpeg(0))))
    yield server
    server.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.jpg").write_bytes(small_jpeg(1))
    (images / "png-named.jpg").write_bytes(corpus.png(90, 60))
    (images / "html-named.jpg").write_bytes(b"<!doctype html><p>not an image</p>")
    (tmp_path / "secret.jpg").write_bytes(small_jpeg(2))
    os.symlink(tmp_path / "secret.jpg", images / "link-out.jpg")
    return images


def hostile_stream(root: Path, port: int) -> dict[str, tuple[bytes | None, str]]:
    """key -> (message value, the error.type its dead letter must carry)."""
    stream: dict[str, tuple[bytes | None, str]] = {"no-value": (None, "bad_event")}
    for case in corpus.rejected_events():
        if case.name != "image-over-limit" and case.error is not None:  # limit differs here
            stream[f"event-{case.name}"] = (case.data, case.error.code)
    for case in corpus.rejected_images():
        assert case.error is not None
        key = f"image-{case.name}"
        stream[key] = (upload_event(key, NOW_MS, data=case.data), case.error.code)
    references = {
        "over-byte-limit": ("", "too_large"),  # inline, below
        "file-dot-dot": (f"file://{root}/../secret.jpg", "fetch_forbidden"),
        "file-encoded-dot-dot": (f"file://{root}/%2e%2e/secret.jpg", "fetch_forbidden"),
        "file-symlink-out": (f"file://{root}/link-out.jpg", "fetch_forbidden"),
        "file-etc-passwd": ("file:///etc/passwd", "fetch_forbidden"),
        "file-html-named-jpg": (f"file://{root}/html-named.jpg", "unsupported_format"),
        "http-loopback-not-allowed": (f"http://127.0.0.1:{port}/a.jpg", "fetch_forbidden"),
        "http-mapped-loopback": (f"http://[::ffff:127.0.0.1]:{port}/a.jpg", "fetch_forbidden"),
        "http-allowed-name-to-loopback": (f"http://images.test:{port}/a.jpg", "fetch_forbidden"),
        "http-allowed-decimal-ip": (f"http://2130706433:{port}/a.jpg", "fetch_forbidden"),
        "s3": ("s3://bucket/a.jpg", "fetch_forbidden"),
    }
    for name, (url, error_type) in references.items():
        key = f"ref-{name}"
        if url:
            stream[key] = (upload_event(key, NOW_MS, url=url), error_type)
        else:
            data = bytes(MAX_IMAGE_BYTES + 1)
            stream[key] = (upload_event(key, NOW_MS, data=data), error_type)
    return stream


def good_stream(root: Path) -> dict[str, bytes]:
    stream = {
        "good-file": upload_event("good-file", NOW_MS, url=f"file://{root}/good.jpg"),
        "good-png-named-jpg": upload_event(
            "good-png-named-jpg", NOW_MS, url=f"file://{root}/png-named.jpg"
        ),
    }
    for i in range(4):
        stream[f"good-{i}"] = upload_event(f"good-{i}", NOW_MS, data=small_jpeg(10 + i))
    for case in corpus.accepted_images():
        key = f"good-{case.name}"
        stream[key] = upload_event(key, NOW_MS, data=case.data, aspects=["1:1", "191:100"])
    return stream


@pytest.mark.parametrize("isolated", [False, True], ids=["in-process", "decode-isolation"])
def test_a_hostile_stream_is_dead_lettered_and_the_worker_keeps_going(
    broker: EmbeddedBroker,
    topics: Topics,
    start_worker: Callable[..., RunningWorker],
    reader_factory: Callable[[Topics], Reader],
    root: Path,
    counting: Server,
    backend: OnnxBackend,
    isolated: bool,
) -> None:
    """With decode isolation the same errors cross the process boundary, and an image that
    crashes its decoder process is one more dead letter."""
    settings = settings_for(
        broker.bootstrap,
        topics,
        file_root=root,
        max_image_bytes=MAX_IMAGE_BYTES,
        http_allowed_hosts=("images.test", "2130706433"),
        http_allow_private=False,
        fetch_attempts=1,
    )

    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "images.test" else resolve(host, port)

    fetcher = Fetcher(FetchPolicy.from_settings(settings), resolver=resolver)
    hostile, good = hostile_stream(root, counting.port), good_stream(root)
    cropper = None
    if isolated:
        decode = partial(fragile_decode, long_side=backend.info.long_side, limits=settings.limits)
        decoder = ProcessDecoder(decode, settings.prepare_timeout_s)
        cropper = Cropper(backend, settings.aspects, settings.limits, settings.max_batch, decoder)
        hostile["image-crashes-its-decoder"] = (
            upload_event("image-crashes-its-decoder", NOW_MS, data=CRASH),
            "decoder_crashed",
        )
    running = start_worker(settings, cropper=cropper, fetcher=fetcher)
    reader = reader_factory(topics)

    messages: list[Message] = [(k.encode(), v) for k, (v, _) in hostile.items()]
    messages += [(k.encode(), v) for k, v in good.items()]
    random.Random(8).shuffle(messages)  # good ones spread among the bad
    send(broker.bootstrap, topics.input, messages)

    reader.until(lambda seen: len(seen) >= len(messages), 120)
    results = reader.on(topics.output)
    letters = reader.on(topics.dead_letter)

    assert sorted((m.key() or b"").decode() for m in results) == sorted(good)
    assert sorted((m.key() or b"").decode() for m in letters) == sorted(hostile)
    assert len(messages) == len(results) + len(letters)  # nothing lost, nothing doubled
    sent = dict(messages)
    for letter in letters:
        key = (letter.key() or b"").decode()
        headers = dict(letter.headers() or [])
        assert headers["error.type"] == hostile[key][1].encode(), (key, headers)
        assert letter.value() == sent[key.encode()], key
    for result in results:
        doc = json.loads(result.value() or b"")
        assert doc["media_id"] == (result.key() or b"").decode()
        assert all(w >= 1 and h >= 1 for _, _, w, h in doc["crops"].values())
    assert counting.connections == 0  # no SSRF attempt reached the loopback server

    assert running.thread.is_alive() and running.health.running and not running.errors
    after = upload_event("after", NOW_MS, data=small_jpeg(99))
    send(broker.bootstrap, topics.input, [(b"after", after)])
    reader.until(lambda seen: any(m.key() == b"after" for m in seen), 60)
    assert [m.key() for m in reader.on(topics.output) if m.key() == b"after"] == [b"after"]
    if isolated:
        decoder.close()
