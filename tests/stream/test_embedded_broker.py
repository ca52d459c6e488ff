"""The embedded broker never outlives the process that started it: a demo or test runner killed
with SIGKILL (or an unhandled SIGTERM) takes its tansu with it, instead of leaving an orphan
holding a port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cropworker.demo.broker import EmbeddedBroker

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux prctl")

STARTER = """
import sys, time
from cropworker.demo.broker import EmbeddedBroker
broker = EmbeddedBroker().start()
print(broker._process.pid, flush=True)
time.sleep(120)
"""


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_broker_dies_with_the_process_that_started_it(signum: signal.Signals) -> None:
    parent = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    with parent.stdout:
        tansu = int(parent.stdout.readline())
    try:
        assert not gone(tansu)
        parent.send_signal(signum)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not gone(tansu) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(tansu), "the broker outlived its parent"
    finally:
        if not gone(tansu):
            os.kill(tansu, signal.SIGKILL)


def test_a_stopped_broker_is_stopped() -> None:
    with EmbeddedBroker() as broker:
        process = broker._process
        assert process is not None and broker.running
    assert not broker.running and process.poll() is not None
