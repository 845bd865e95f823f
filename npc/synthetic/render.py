"""Rendering a scene to an image, and the image's JPEG encoding."""
from __future__ import annotations

import io
import math
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

from .scenes import Scene, SceneObject

_JPEG_QUALITY = 90
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, for clean edges at 32-64 px


def _polygon(o: SceneObject, scale: float) -> List[Tuple[float, float]]:
    cx, cy, r = o.cx * scale, o.cy * scale, o.radius * scale
    if o.shape == "square":
        h = r * 0.85
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif o.shape == "triangle":
        pts = [(r * math.sin(a), -r * math.cos(a)) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        pts = [(x, y + r * 0.15) for x, y in pts]  # centre the bounding box, not the centroid
    elif o.shape == "diamond":
        pts = [(0.0, -r), (r * 0.7, 0.0), (0.0, r), (-r * 0.7, 0.0)]
    elif o.shape == "cross":
        t = r * 0.33
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t),
               (-r, -t), (-t, -t)]
    elif o.shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = i * math.pi / 5
            pts.append((rad * math.sin(a), -rad * math.cos(a)))
    else:
        raise ValueError(o.shape)
    th = math.radians(o.rotation)
    c, s = math.cos(th), math.sin(th)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]


def _background(scene: Scene, side: int) -> np.ndarray:
    """Background at supersampled resolution; textures are subtle (+-18) so shapes stay salient."""
    img = np.empty((side, side, 3), dtype=np.int16)
    img[:] = scene.bg_rgb
    period = max(2, side // 8)
    yy, xx = np.mgrid[0:side, 0:side]
    if scene.texture == "striped":
        mask = ((yy if scene.texture_axis == 0 else xx) // (period // 2)) % 2 == 0
    elif scene.texture == "checkered":
        mask = ((yy // period) + (xx // period)) % 2 == 0
    elif scene.texture == "dotted":
        dy = (yy % period) - period / 2
        dx = (xx % period) - period / 2
        mask = dx * dx + dy * dy <= (period * 0.18) ** 2
    else:
        return img.astype(np.uint8)
    lighter = sum(scene.bg_rgb) < 3 * 128
    img[mask] += 18 if lighter else -18
    return np.clip(img, 0, 255).astype(np.uint8)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    side = image_size * _SUPERSAMPLE
    canvas = Image.fromarray(_background(scene, side), "RGB")
    draw = ImageDraw.Draw(canvas)
    for o in scene.objects:
        if o.shape in ("circle", "ring"):
            cx, cy, r = o.cx * side, o.cy * side, o.radius * side
            box = (cx - r, cy - r, cx + r, cy + r)
            if o.shape == "circle":
                draw.ellipse(box, fill=o.rgb)
            else:
                draw.ellipse(box, outline=o.rgb, width=max(1, int(round(r * 0.42))))
        else:
            draw.polygon(_polygon(o, side), fill=o.rgb)
    img = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    # Mild sensor-like noise so images are not piecewise constant (and JPEG artefacts vary).
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-4, 5, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # 4:4:4 chroma: with 4:2:0 a 6 px shape's colour bleeds into the background at 32-64 px.
    img.save(buf, format="JPEG", quality=_JPEG_QUALITY, subsampling=0, optimize=False, progressive=False)
    return buf.getvalue()
