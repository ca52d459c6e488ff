"""Smart-crop peers behind one interface, for the side-by-side speed and quality benchmarks.

Every peer takes the encoded image and the aspect ratio names and returns, for each, a box
(x, y, w, h) in pixels of the image as displayed (EXIF orientation applied) of exactly the size
cropworker uses: the largest box of that aspect (`cropworker.crop.box_size`). Only the position
is the method's, so the quality report compares placements, not box sizes. Each peer does its
own decoding, as it would in a service, and that is part of its time.

- cropworker: OpenCV, DCT-reduced to the network input; the window holding the most predicted
  fixations.
- libvips attention / entropy: libvips, full size; `smartcrop` (box centred on the peak of an
  edge + skin + saturation map / trims the edge with less entropy until the box is left).
- smartcrop.py: Pillow, full size, then shrunk; the best score of skin, edge and saturation
  features under a rule-of-thirds weight.
- spectral residual: OpenCV, full size; the window holding the most spectral-residual saliency
  (Hou & Zhang 2007), with cropworker's own geometry.
- Haar faces: OpenCV, full size; the box centred on the faces found, the centre without faces.
- centre: nothing decoded (the header gives the size); the centre.

The optional ones raise `Unavailable` with what to install when their library is missing.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from cropworker import crop
from cropworker.backend import DEFAULT_MODEL, LADDER, OnnxBackend
from cropworker.pipeline import Cropper
from cropworker.probe import probe

Box = crop.Box

# Spectral residual as OpenCV's saliency module computes it: a 64x64 grey thumbnail, a 3x3 mean
# filter on the log amplitude, and a 5x5 Gaussian (sigma 8) on the inverse transform.
SR_SIDE = 64
SR_BLUR_SIZE, SR_BLUR_SIGMA = 5, 8.0
# Haar faces are searched in the image shrunk to this long side: the size of the fixation sets'
# stimuli, where faces of interest are at least the cascade's 24 px window.
HAAR_WORK_SIDE = 640
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Where a Haar cascade can come from, in order: an explicit path, OpenCV 4.x wheels (cv2.data),
# Debian's opencv-data package. OpenCV 5 wheels ship no cascades and keep the detector in contrib.
HAAR_CASCADE_ENV = "BENCH_HAAR_CASCADE"
DEBIAN_CASCADES = Path("/usr/share/opencv4/haarcascades")
# smartcrop.py's own command line asks for a crop 100 px wide; the image is shrunk to match.
SMARTCROP_WIDTH = 100


class Unavailable(Exception):
    """The peer cannot run here; the message says what to install."""


class Peer(Protocol):
    name: str

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        """Encoded image -> {aspect name: largest box of that aspect, placed by the method}."""
        ...


def place(cx: float, cy: float, width: int, height: int, aspect: float) -> Box:
    """The largest `aspect` box in a width x height image, centred as near (cx, cy) as fits."""
    bw, bh = crop.box_size(width, height, aspect)
    x = min(max(round(cx - bw / 2), 0), width - bw)
    y = min(max(round(cy - bh / 2), 0), height - bh)
    return x, y, bw, bh


def spectral_residual(grey: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang 2007) of a grey image, (SR_SIDE, SR_SIDE) float32
    with maximum 1: step for step OpenCV contrib's `StaticSaliencySpectralResidual`, before its
    final resize to the image size (tests compare the two where contrib is installed)."""
    small = cv2.resize(grey, (SR_SIDE, SR_SIDE), interpolation=cv2.INTER_LINEAR_EXACT)
    spectrum = np.fft.fft2(small.astype(np.float64))
    log_amplitude = np.log(np.abs(spectrum))
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3), borderType=cv2.BORDER_DEFAULT)
    back = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) * spectrum.size
    blurred = cv2.GaussianBlur(back, (SR_BLUR_SIZE, SR_BLUR_SIZE), SR_BLUR_SIGMA)
    squared = blurred * blurred
    out: np.ndarray = (squared / squared.max()).astype(np.float32)
    return out


def decode_bgr(data: bytes, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Full-size decode with OpenCV (which applies EXIF orientation)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ValueError("image cannot be decoded")
    return image


class Cropworker:
    """This project: decode at network size, saliency network, window geometry."""

    def __init__(self, model: str = DEFAULT_MODEL, threads: int = 1) -> None:
        self.backend = OnnxBackend(model, threads=threads)
        self.name = f"cropworker {self.backend.info.tag}"
        meta = self.backend.session.get_modelmeta().custom_metadata_map
        self.macs = int(meta["macs"]) if "macs" in meta else None  # per 4:3 photo, as served
        self.rung = self.backend.info.name in LADDER

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        return Cropper(self.backend, aspects).crop(data).crops


class Centre:
    """The plain centre crop. Needs only the header's size and orientation."""

    name = "centre"

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        width, height = probe(data).oriented_size
        return {a: crop.centre_crop(width, height, crop.parse_aspect(a)) for a in aspects}


class Libvips:
    """libvips `smartcrop` to the exact box size on the full, auto-rotated image.

    libvips' own conventions: `attention` centres the box on the maximum of a shrunk, blurred map
    of edges (Sobel on L*), skin tones and saturated colours (an argmax placement); `entropy`
    trims whichever edge slice has less entropy until the box is left. The position is read from
    the result's offset (documented: xoffset/yoffset are minus the crop's corner). Its
    operation cache is turned off so that repeated runs of the same bytes do the work again."""

    def __init__(self, interesting: str) -> None:
        try:
            import pyvips
        except (ImportError, OSError) as exc:
            raise Unavailable(
                f"libvips {interesting}: apt-get install libvips42; pip install pyvips ({exc})"
            ) from exc
        pyvips.cache_set_max(0)
        self.pyvips = pyvips
        self.interesting = interesting
        self.name = f"libvips {interesting}"

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        image = self.pyvips.Image.new_from_buffer(data, "").autorot()
        out = {}
        for a in aspects:
            bw, bh = crop.box_size(image.width, image.height, crop.parse_aspect(a))
            # the position is chosen when the operation is built, before any pixel is written
            cropped = image.smartcrop(bw, bh, interesting=self.interesting)
            out[a] = (-cropped.xoffset, -cropped.yoffset, bw, bh)
        return out


class Smartcrop:
    """smartcrop.py (the Python port of smartcrop.js) used as its own command line uses it: a
    crop `SMARTCROP_WIDTH` px wide, the image shrunk to match; scales fixed at 1 so that it
    searches boxes of exactly the largest size. Its box is mapped back and re-centred."""

    name = "smartcrop.py"

    def __init__(self) -> None:
        try:
            import smartcrop
            from PIL import Image, ImageOps
        except ImportError as exc:
            raise Unavailable(f"smartcrop.py: pip install smartcrop ({exc})") from exc
        self.cropper = smartcrop.SmartCrop()
        self.image_module, self.image_ops = Image, ImageOps

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        image = self.image_ops.exif_transpose(self.image_module.open(io.BytesIO(data)))
        image = image.convert("RGB")
        width, height = image.size
        out = {}
        for a in aspects:
            aspect = crop.parse_aspect(a)
            target = (SMARTCROP_WIDTH, max(1, round(SMARTCROP_WIDTH / aspect)))
            top: dict[str, Any] = self.cropper.crop(image, *target, min_scale=1.0, max_scale=1.0)[
                "top_crop"
            ]
            cx, cy = top["x"] + top["width"] / 2, top["y"] + top["height"] / 2
            out[a] = place(cx, cy, width, height, aspect)
        return out


class SpectralResidual:
    """Spectral-residual saliency (`spectral_residual`, OpenCV contrib's algorithm reimplemented
    in NumPy: contrib's `cv2` cannot sit beside the runtime's opencv-python-headless), cropped
    with cropworker's own window geometry, so only the saliency map differs."""

    name = "spectral residual"

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        grey = cv2.cvtColor(decode_bgr(data), cv2.COLOR_BGR2GRAY)
        saliency = spectral_residual(grey)
        height, width = grey.shape
        return {a: crop.best_crop(saliency, width, height, crop.parse_aspect(a)) for a in aspects}


def haar_cascade_path() -> Path:
    """The frontal-face cascade: $BENCH_HAAR_CASCADE, else OpenCV 4.x's cv2.data, else Debian's
    opencv-data package."""
    import cv2.data  # a package in every OpenCV wheel; 5.x's holds no cascade files

    candidates = [Path(p) for p in [os.environ.get(HAAR_CASCADE_ENV, "")] if p]
    candidates.append(Path(cv2.data.haarcascades) / HAAR_CASCADE)
    candidates.append(DEBIAN_CASCADES / HAAR_CASCADE)
    for path in candidates:
        if path.is_file():
            return path
    raise Unavailable(
        f"Haar faces: no {HAAR_CASCADE} (apt-get install opencv-data, or set {HAAR_CASCADE_ENV})"
    )


class HaarFaces:
    """The pre-saliency approach: OpenCV's Viola-Jones frontal-face cascade, as in OpenCV's face
    detection tutorial (equalised grey image, default detectMultiScale parameters); the box is
    centred on the faces' centres weighted by area (thumbor's focal points), or on the image
    centre when none is found. `with_faces` counts the images where faces were found."""

    name = "Haar faces + centre"

    def __init__(self, cascade: Path | None = None) -> None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise Unavailable(
                "Haar faces: OpenCV 5 moved CascadeClassifier to contrib; put opencv-contrib-"
                "python-headless of the same version on PYTHONPATH (benchmarks/README.md)"
            )
        path = cascade or haar_cascade_path()
        self.detector = cv2.CascadeClassifier(str(path))
        if self.detector.empty():
            raise Unavailable(f"Haar faces: cannot load {path}")
        self.cascade = path
        self.with_faces = 0
        self.images = 0

    def faces(self, grey: np.ndarray) -> np.ndarray:
        """(N, 4) x, y, w, h of the faces in `grey`, in its pixels."""
        height, width = grey.shape
        scale = min(1.0, HAAR_WORK_SIDE / max(width, height))
        work = grey
        if scale < 1.0:
            size = (round(width * scale), round(height * scale))
            work = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        found = self.detector.detectMultiScale(cv2.equalizeHist(work))
        faces: np.ndarray = np.asarray(found, np.float64).reshape(-1, 4) / scale
        return faces

    def crops(self, data: bytes, aspects: Sequence[str]) -> dict[str, Box]:
        grey = decode_bgr(data, cv2.IMREAD_GRAYSCALE)
        height, width = grey.shape
        faces = self.faces(grey)
        self.images += 1
        if not len(faces):
            return {a: crop.centre_crop(width, height, crop.parse_aspect(a)) for a in aspects}
        self.with_faces += 1
        area = faces[:, 2] * faces[:, 3]
        cx = float(np.average(faces[:, 0] + faces[:, 2] / 2, weights=area))
        cy = float(np.average(faces[:, 1] + faces[:, 3] / 2, weights=area))
        return {a: place(cx, cy, width, height, crop.parse_aspect(a)) for a in aspects}


PEERS: dict[str, Callable[[], Peer]] = {
    "libvips-attention": lambda: Libvips("attention"),
    "libvips-entropy": lambda: Libvips("entropy"),
    "smartcrop.py": Smartcrop,
    "spectral-residual": SpectralResidual,
    "haar-faces": HaarFaces,
    "centre": Centre,
}


def load_peers(names: Sequence[str] = tuple(PEERS)) -> tuple[list[Peer], dict[str, str]]:
    """The peers that run here, and for the others why not."""
    peers, missing = [], {}
    for name in names:
        try:
            peers.append(PEERS[name]())
        except Unavailable as exc:
            missing[name] = str(exc)
    return peers, missing


def check_box(box: Box, width: int, height: int, aspect: float) -> None:
    """Raise ValueError unless `box` is the largest `aspect` box and lies inside the image."""
    x, y, w, h = box
    if (w, h) != crop.box_size(width, height, aspect):
        raise ValueError(f"box {box} is not the largest {aspect:.3f} box of {width}x{height}")
    if not all(isinstance(v, int) for v in box) or not (
        0 <= x <= width - w and 0 <= y <= height - h
    ):
        raise ValueError(f"box {box} is not inside {width}x{height}")
