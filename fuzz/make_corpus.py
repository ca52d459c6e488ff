"""Write the seed corpus for the fuzzers from the hostile corpus of the tests.

    python -m fuzz.make_corpus fuzz/corpus    # writes fuzz/corpus/decode and fuzz/corpus/events

Seeds are named after their corpus case; the fuzzers add their own finds beside them."""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.hardening import corpus


def write(directory: Path) -> dict[str, int]:
    """Write every case's bytes to directory/{decode,events}/NAME; returns counts per target."""
    seeds = {
        "decode": corpus.rejected_images() + corpus.accepted_images(),
        "events": corpus.rejected_events() + corpus.accepted_events(),
    }
    for target, cases in seeds.items():
        (directory / target).mkdir(parents=True, exist_ok=True)
        for case in cases:
            (directory / target / case.name).write_bytes(case.data)
    return {target: len(cases) for target, cases in seeds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    counts = write(parser.parse_args().directory)
    print(", ".join(f"{n} {target} seeds" for target, n in counts.items()))


if __name__ == "__main__":
    main()
