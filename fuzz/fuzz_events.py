"""libFuzzer entry point for upload-event parsing (`targets.check_event`).

    python -m fuzz.fuzz_events -dict=fuzz/events.dict [libFuzzer flags] [corpus dirs]

The dictionary gives the mutator the event's field names and JSON's own tokens, so mutations
of the seed events stay near the schema instead of breaking the JSON at the first byte."""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports(include=["cropworker"]):
    from fuzz.targets import check_event


def main() -> None:
    warnings.simplefilter("error")  # as in the test suite: a warning is a finding
    atheris.Setup(sys.argv, check_event)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
