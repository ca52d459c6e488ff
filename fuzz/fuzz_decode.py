"""libFuzzer entry point for image admission and decoding (`targets.check_decode`).

    python -m fuzz.fuzz_decode [libFuzzer flags] [corpus dirs]

Only cropworker's own modules are instrumented for coverage: instrumenting everything loaded
(numpy, OpenCV's Python side) takes half a minute and guides nothing the decoder does in C."""

from __future__ import annotations

import sys
import warnings

import atheris
import cv2

with atheris.instrument_imports(include=["cropworker"]):
    from fuzz.targets import check_decode


def main() -> None:
    warnings.simplefilter("error")  # as in the test suite: a warning is a finding
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # one line per bad input
    atheris.Setup(sys.argv, check_decode)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
