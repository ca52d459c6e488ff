"""Pictures of results: the image with its saliency heat map, crop boxes and salient points,
and an HTML page that shows a set of them side by side."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .crop import Box
from .decode import DecodedImage
from .pipeline import CropResult

HEAT_OPACITY = 0.45
# One colour per aspect (BGR), in the order the aspects are listed; cycles if there are more.
BOX_COLOURS = ((255, 255, 255), (0, 215, 255), (80, 220, 80), (255, 120, 40), (200, 80, 255))
KEEP_COLOUR = (255, 0, 255)  # keep-regions: magenta, filled thinly so they read apart from crops


def render(preview: DecodedImage, result: CropResult, keep: Sequence[Box] = ()) -> np.ndarray:
    """BGR picture: `preview` (any size, same aspect as the original) with the result drawn on,
    and the `keep` regions asked for (boxes, and points as 1x1 boxes) marked."""
    bgr = cv2.cvtColor(preview.rgb, cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[:2]
    sx, sy = w / result.width, h / result.height
    heat = cv2.resize(
        result.saliency / max(float(result.saliency.max()), 1e-12),
        (w, h),
        interpolation=cv2.INTER_LINEAR,
    )
    heat_bgr = cv2.applyColorMap(np.clip(heat * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    out = cv2.addWeighted(bgr, 1 - HEAT_OPACITY, heat_bgr, HEAT_OPACITY, 0)
    thickness = max(2, round(max(w, h) / 300))
    for i, (name, (x, y, bw, bh)) in enumerate(result.crops.items()):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        p0 = (round(x * sx), round(y * sy))
        p1 = (round((x + bw) * sx) - 1, round((y + bh) * sy) - 1)
        cv2.rectangle(out, p0, p1, colour, thickness)
        cv2.putText(
            out,
            name,
            (p0[0] + 4 + 60 * i, p0[1] + 22),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            colour,
            2,
            cv2.LINE_AA,
        )
    for x, y, _ in result.salient_points:
        cv2.circle(out, (round(x * sx), round(y * sy)), thickness * 3, (0, 255, 0), thickness)
    for x, y, bw, bh in keep:
        p0 = (round(x * sx), round(y * sy))
        if bw == 1 and bh == 1:  # a point
            cv2.drawMarker(out, p0, KEEP_COLOUR, cv2.MARKER_CROSS, thickness * 8, thickness)
            continue
        p1 = (round((x + bw) * sx) - 1, round((y + bh) * sy) - 1)
        shade = out.copy()
        cv2.rectangle(shade, p0, p1, KEEP_COLOUR, cv2.FILLED)
        out = cv2.addWeighted(out, 0.75, shade, 0.25, 0)
        cv2.rectangle(out, p0, p1, KEEP_COLOUR, thickness)
    return out


def write_html(out_dir: Path, entries: Sequence[tuple[str, str, dict[str, object]]]) -> Path:
    """index.html showing (title, picture file name, result JSON) entries."""
    cards = "\n".join(
        f'<figure><img src="{html.escape(picture)}" alt="{html.escape(title)}">'
        f"<figcaption><b>{html.escape(title)}</b><pre>{html.escape(json.dumps(result))}</pre>"
        f"</figcaption></figure>"
        for title, picture, result in entries
    )
    page = (
        "<!doctype html><meta charset=utf-8><title>cropworker report</title>"
        "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;"
        "vertical-align:top;margin:.5em;max-width:520px}img{max-width:520px}"
        "pre{white-space:pre-wrap;font-size:11px}</style>"
        "<h1>cropworker: saliency and crops</h1>"
        "<p>Heat map: predicted share of human fixations. Boxes: the largest crop of each aspect"
        " keeping the most saliency. Green circles: salient points.</p>\n" + cards
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "index.html"
    index.write_text(page)
    return index
