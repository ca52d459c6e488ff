"""The fuzz targets in the test suite: every corpus seed through them in-process, random
mutations of the seeds through them (hypothesis, so this runs without atheris), and a short
bounded atheris run of each entry point. The long run is on demand (tests/hardening/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz import make_corpus
from fuzz.targets import check_decode, check_event
from tests.hardening import corpus

ROOT = Path(__file__).resolve().parents[2]
IMAGES = corpus.rejected_images() + corpus.accepted_images()
EVENTS = corpus.rejected_events() + corpus.accepted_events()
# Small seeds only for the mutations: a mutated 200 kB nesting bomb tells nothing new.
SMALL_EVENTS = [c.data for c in EVENTS if len(c.data) < 4096]


@pytest.mark.parametrize("case", IMAGES, ids=[c.name for c in IMAGES])
def test_image_seeds_pass_the_decode_target(case: corpus.Case) -> None:
    check_decode(case.data)


@pytest.mark.parametrize("case", EVENTS, ids=[c.name for c in EVENTS])
def test_event_seeds_pass_the_event_target(case: corpus.Case) -> None:
    check_event(case.data)


def mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    """Overwrite bytes at (position, value) pairs, then keep the first `cut` per mille."""
    data = bytearray(seed)
    for position, value in edits:
        if data:
            data[position % len(data)] = value
    return bytes(data[: len(data) * cut // 1000])


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([c.data for c in IMAGES]), EDITS, st.integers(0, 1000))
def test_mutated_images_pass_the_decode_target(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    check_decode(mutate(seed, edits, cut))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SMALL_EVENTS), EDITS, st.integers(0, 1000))
def test_mutated_events_pass_the_event_target(
    seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    check_event(mutate(seed, edits, cut))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "flags"),
    [("fuzz.fuzz_decode", []), ("fuzz.fuzz_events", ["-dict=fuzz/events.dict"])],
)
def test_a_bounded_atheris_run_finds_nothing(module: str, flags: list[str], tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    make_corpus.write(tmp_path / "corpus")
    target = "decode" if module.endswith("decode") else "events"
    command = [
        sys.executable,
        "-m",
        module,
        *flags,
        "-runs=30000",
        "-max_total_time=10",
        "-seed=1",
        f"-artifact_prefix={tmp_path}/",
        str(tmp_path / "corpus" / target),
    ]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done " in run.stderr and " runs in " in run.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
