"""The CPU image of deploy/Dockerfile, built and run without a Docker engine
(docs/notes.md#container-image-without-docker). buildah builds it daemonless (vfs storage, chroot
isolation) on a stand-in for python:3.11-slim-bookworm that debootstrap makes (registries are
unreachable here). Its worker then runs the way a pod runs it: the image's own entry point, user,
environment and working directory, as PID 1 of its own PID and mount namespaces, on a read-only
root with a tmpfs /tmp, no capabilities and no_new_privs, consuming uploads from the embedded
broker until SIGTERM.

On a developer machine the base and the image are kept in build/image-test, keyed by everything
the build reads; in CI (CI=true) both are made fresh every run and removed afterwards. Without
buildah, debootstrap or root the tests skip (fail in CI, where .ci/run installs the tools)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cropworker.demo.broker import EmbeddedBroker, free_port
from cropworker.stream.events import upload_event
from cropworker.stream.settings import EMBEDDED_SESSION_TIMEOUT_MS, ENV_PREFIX
from tests.stream.conftest import Reader, new_topics, send, small_jpeg

from .conftest import DEPLOY, ROOT, missing, tool
from .test_dockerfile import lock_pins

pytestmark = [pytest.mark.deploy, pytest.mark.broker, pytest.mark.slow]

CI = os.environ.get("CI") == "true"
# Everything the build reads (deploy/Dockerfile's context): a change here means a new image.
BUILD_INPUTS = [
    "deploy/Dockerfile",
    "deploy/Dockerfile.dockerignore",
    "deploy/requirements.lock",
    "deploy/requirements-build.lock",
    "pyproject.toml",
    "README.md",
    "worker",
]
DEV_STORAGE = ROOT / "build" / "image-test"
# The stand-in base: Debian bookworm's Python 3.11 (python:3.11-slim-bookworm's Debian and
# minor version) with its venv module, which is all the Dockerfile uses of its base.
BASE_PACKAGES = "python3,python3-venv"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# TLS is intercepted on this network: pip inside the build must trust what the host trusts.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UPLOADS = 16
SHUTDOWN_TIMEOUT_S = 10

# Run by `unshare --mount --pid --fork` as root, in the new namespaces; arguments: rootfs, uid,
# gid, working directory, then the command. Mounts what a container runtime gives a pod (a
# private /proc and /dev, sysfs read-only, a tmpfs /tmp like an emptyDir), makes the root
# read-only (readOnlyRootFilesystem), then execs the command chrooted, as the user, with an empty
# bounding set (capabilities: drop ALL) and no_new_privs (allowPrivilegeEscalation: false).
# setpriv runs as root so that it may drop the bounding set (`chroot --userspec` first would
# leave it full: a non-root process cannot drop it), then changes user; the last `sh` only
# enters the working directory and execs, so the worker is PID 1, as in a container.
POD = """
set -e
root=$1 uid=$2 gid=$3 workdir=$4
shift 4
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o nosuid,mode=755 tmpfs "$root/dev"
for device in null zero full random urandom; do
    touch "$root/dev/$device"
    mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,noexec tmpfs "$root/dev/shm"
exec chroot "$root" setpriv --reuid "$uid" --regid "$gid" --clear-groups \\
    --bounding-set=-all --inh-caps=-all --no-new-privs \\
    -- /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$workdir" "$@"
"""


def run(command: list[str], timeout: float = 900) -> str:
    """Run a tool; on failure, fail with the end of what it said."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[:4]}...: {(result.stdout + result.stderr)[-4000:]}"
    return result.stdout.strip()


@dataclass
class Buildah:
    """buildah on its own vfs store (works anywhere as root, unlike overlay)."""

    exe: str
    storage: Path

    def __call__(self, *args: str) -> str:
        store = ["--root", str(self.storage / "root"), "--runroot", str(self.storage / "run")]
        return run([self.exe, *store, "--storage-driver", "vfs", *args])

    def has(self, image: str) -> bool:
        try:
            self("inspect", "--type", "image", image)
        except AssertionError:
            return False
        return True


@dataclass
class Image:
    buildah: Buildah
    name: str
    config: dict[str, Any]  # the image's Docker config: Entrypoint, Cmd, User, Env, ...
    seconds: dict[str, float]  # base and build: 0 when reused


def build_inputs_digest(base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for entry in BUILD_INPUTS:
        path = ROOT / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(f"\0{file.relative_to(ROOT)}\0".encode() + file.read_bytes())
    return digest.hexdigest()


def make_base(buildah: Buildah, debootstrap: str, name: str) -> None:
    """A minimal Debian bookworm with Python, debootstrapped straight into a scratch container."""
    container = buildah("from", "scratch")
    try:
        rootfs = Path(buildah("mount", container))
        include = f"--include={BASE_PACKAGES}"
        run([debootstrap, "--variant=minbase", include, "bookworm", str(rootfs), DEBIAN_MIRROR])
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        for cache in ("var/cache/apt", "var/lib/apt/lists"):  # as Debian's own images do
            shutil.rmtree(rootfs / cache)
        buildah("commit", "--rm", container, name)
    except BaseException:
        buildah("rm", container)
        raise


@pytest.fixture(scope="session")
def image() -> Iterator[Image]:
    buildah_exe = tool("buildah", "apt-get install buildah")
    debootstrap = tool("debootstrap", "apt-get install debootstrap")
    for name in ("unshare", "nsenter", "chroot", "mount"):
        tool(name, "util-linux, coreutils")
    if os.geteuid() != 0:
        missing("root", "vfs storage, chroot and mount namespaces need root")
    storage = Path(tempfile.mkdtemp(prefix="cropworker-image-")) if CI else DEV_STORAGE
    buildah = Buildah(buildah_exe, storage)
    seconds = {"base": 0.0, "build": 0.0}
    try:
        base = "localhost/cropworker-base:bookworm"
        if not buildah.has(base):
            start = time.monotonic()
            make_base(buildah, debootstrap, base)
            seconds["base"] = time.monotonic() - start
        base_id = buildah("inspect", "--type", "image", "--format", "{{.FromImageID}}", base)
        name = f"localhost/cropworker:test-{build_inputs_digest(base_id)[:16]}"
        if not buildah.has(name):
            start = time.monotonic()
            buildah("bud", "--isolation", "chroot", "--pull=never", "--format", "docker",
                    "--file", str(DEPLOY / "Dockerfile"),
                    "--ignorefile", str(DEPLOY / "Dockerfile.dockerignore"),
                    "--build-arg", f"PYTHON_IMAGE={base}", "--tag", name, str(ROOT))  # fmt: skip
            seconds["build"] = time.monotonic() - start
            for old in buildah("images", "--format", "{{.Name}}:{{.Tag}}").split():
                if old.startswith("localhost/cropworker:test-") and old != name:
                    buildah("rmi", old)  # a developer's store keeps the latest image only
        config = json.loads(buildah("inspect", "--type", "image", name))["Docker"]["config"]
        yield Image(buildah, name, config, seconds)
    finally:
        if CI:
            shutil.rmtree(storage, ignore_errors=True)


@pytest.fixture(scope="module")
def rootfs(image: Image) -> Iterator[Path]:
    """A container of the image: its root filesystem, as a runtime would unpack it (the pod
    mounts it read-only, so the tests can share it)."""
    container = image.buildah("from", "--pull=never", image.name)
    try:
        yield Path(image.buildah("mount", container))
    finally:
        image.buildah("rm", container)


class Pod:
    """The image's entry point and command, run as a pod runs them (see POD)."""

    def __init__(self, rootfs: Path, config: dict[str, Any], env: dict[str, str], log: Path):
        uid, _, gid = config["User"].partition(":")
        command = [*config["Entrypoint"], *config["Cmd"]]
        sandbox = ["sh", "-c", POD, "pod", str(rootfs), uid, gid, config["WorkingDir"], *command]
        self.log = log
        self.env = env
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [tool("unshare", "util-linux"), "--mount", "--pid", "--fork", *sandbox],
                env=env,  # exactly the image's environment and the settings
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def pid(self) -> int:
        """The worker's PID on the host (unshare's only child, PID 1 inside)."""
        unshare = self.process.pid
        (child,) = Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
        return int(child)

    def proc(self, name: str) -> str:
        return Path(f"/proc/{self.pid()}/{name}").read_text()

    def wait_ready(self, port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"the worker was not ready in {timeout} s: {self.log.read_text()[-4000:]}")

    def exec(self, command: list[str], uid: str, gid: str) -> subprocess.CompletedProcess[str]:
        """Like `kubectl exec`: a command in the worker's namespaces and root, as its user."""
        enter = [tool("nsenter", "util-linux"), "--target", str(self.pid()), "--mount", "--pid"]
        enter += ["--root", "--wd", "--setuid", uid, "--setgid", gid, "--"]
        return subprocess.run(
            enter + command, env=self.env, capture_output=True, text=True, timeout=30
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.pid(), signal.SIGKILL)  # PID 1 gone: its namespace goes with it
            except (ValueError, ProcessLookupError):  # no worker yet, or already gone
                self.process.kill()
            self.process.wait(30)


def status(text: str) -> dict[str, str]:
    return {
        key: value.strip() for key, _, value in (line.partition(":") for line in text.splitlines())
    }


def test_the_image_holds_exactly_the_locked_dependencies(image: Image, rootfs: Path) -> None:
    """The venv is the lock plus cropworker: no resolver choice, no TensorRT, no installer."""
    installed = {}
    for dist in rootfs.glob("opt/cropworker/lib/python3.*/site-packages/*.dist-info"):
        metadata = dict(
            line.split(": ", 1)
            for line in (dist / "METADATA").read_text().splitlines()
            if ": " in line
        )
        installed[metadata["Name"].lower().replace("_", "-")] = metadata["Version"]
    expected = {
        name: str(version) for name, version in lock_pins(DEPLOY / "requirements.lock").items()
    }
    assert installed == {**expected, "cropworker": "0.1.0"}
    site = next(rootfs.glob("opt/cropworker/lib/python3.*/site-packages"))
    assert list(site.glob("cropworker/zoo/*.onnx"))
    assert not (site / "cropworker_models").exists()  # the training code stays out


def test_the_worker_runs_as_a_pod_and_stops_on_sigterm(
    image: Image,
    rootfs: Path,
    broker: EmbeddedBroker,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    config = image.config
    topics = new_topics(broker.bootstrap)
    port = free_port()
    settings = {
        "BROKERS": broker.bootstrap,  # the pod shares the host's network here: see README
        "GROUP_ID": f"group-{topics.input}",
        "INPUT_TOPIC": topics.input,
        "OUTPUT_TOPIC": topics.output,
        "DEAD_LETTER_TOPIC": topics.dead_letter,
        "SESSION_TIMEOUT_MS": str(EMBEDDED_SESSION_TIMEOUT_MS),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_PORT": str(port),
        "SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        "LOG_FORMAT": "json",
    }
    env = dict(entry.split("=", 1) for entry in config["Env"])
    env.update({ENV_PREFIX + key: value for key, value in settings.items()})
    uid, _, gid = config["User"].partition(":")
    pod = Pod(rootfs, config, env, tmp_path / "worker.log")
    reader = Reader(broker.bootstrap, (topics.output, topics.dead_letter))
    try:
        pod.wait_ready(port)
        # what the pod's security context asks for, read from the kernel
        worker = status(pod.proc("status"))
        assert worker["Uid"].split() == [uid] * 4 and worker["Gid"].split() == [gid] * 4
        assert int(worker["CapBnd"], 16) == int(worker["CapEff"], 16) == 0
        assert worker["NoNewPrivs"] == "1"
        assert worker["NSpid"].split()[-1] == "1"
        mounts = {line.split()[4]: line.split()[5] for line in pod.proc("mountinfo").splitlines()}
        assert mounts["/"].split(",")[0] == "ro" and mounts["/tmp"].split(",")[0] == "rw"
        # the image's HEALTHCHECK, run inside it
        test = config["Healthcheck"]["Test"]
        assert test[0] == "CMD"
        probe = pod.exec(test[1:], uid, gid)
        assert probe.returncode == 0, probe.stderr

        now_ms = int(time.time() * 1000)
        keys = [f"u{i}" for i in range(UPLOADS)]
        uploads: list[tuple[bytes, bytes | None]] = [
            (k.encode(), upload_event(k, now_ms, data=small_jpeg(i))) for i, k in enumerate(keys)
        ]
        send(broker.bootstrap, topics.input, uploads)
        reader.until(lambda seen: len(seen) >= UPLOADS, 90)

        os.kill(pod.pid(), signal.SIGTERM)
        returncode = pod.process.wait(SHUTDOWN_TIMEOUT_S + 20)
    finally:
        pod.kill()
        reader.close()
    log = pod.log.read_text()
    assert returncode == 0, log[-4000:]
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records[-1]["message"] == "worker stopped", log[-4000:]
    assert records[-1]["unacknowledged"] == 0
    assert reader.on(topics.dead_letter) == []
    results = reader.on(topics.output)
    assert sorted((m.key() or b"").decode() for m in results) == sorted(keys)
    for result in results:
        doc = json.loads(result.value() or b"")
        assert doc["media_id"] == (result.key() or b"").decode() and doc["crops"]

    seconds = {**image.seconds, "run": time.monotonic() - pod.started}
    size = image.buildah("images", "--format", "{{.Size}}", image.name)
    print(
        f"image {image.name} ({size}): " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    )
    for key, value in seconds.items():
        record_property(f"{key}_s", round(value, 1))
