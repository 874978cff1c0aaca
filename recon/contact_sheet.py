"""A contact sheet: every view of a scene as a labelled thumbnail on one PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .io import atomic_path


def contact_sheet(images: np.ndarray, labels: list[str], thumb_width: int = 200, columns: int | None = None) -> Image.Image:
    """images: (N,H,W,3) floats in [0,1]; one label per image drawn under its thumbnail."""
    n, h, w = images.shape[:3]
    cols = columns or min(n, max(1, math.ceil(math.sqrt(n * 1.5))))
    rows = math.ceil(n / cols)
    tw = min(thumb_width, w)
    th = max(1, round(h * tw / w))
    pad, text_h = 6, 14
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + text_h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        img = Image.fromarray((np.clip(images[k], 0, 1) * 255 + 0.5).astype(np.uint8)).resize((tw, th), Image.LANCZOS)
        x = pad + (k % cols) * (tw + pad)
        y = pad + (k // cols) * (th + text_h + pad)
        sheet.paste(img, (x, y))
        draw.text((x, y + th + 1), labels[k][: max(4, tw // 6)], fill=(230, 230, 230))
    return sheet


def save_png(img: Image.Image, path: Path) -> None:
    """Write a PNG atomically (a temp file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
