"""Decoding an image for the model: one rule, used wherever an image file is read for a model (training
batches, evaluation, the memory bank's encoding, the image cache) and by the checks before training.

The rule (docs/own_data.md, "Images"):

* the file is opened by PIL; an image of more pixels than PIL's decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 million pixels by default) is unreadable, as a damaged file is;
* its EXIF orientation is applied (``PIL.ImageOps.exif_transpose``): a photo stored sideways with an
  orientation tag is seen upright, as image viewers show it;
* 16-bit grayscale (PIL modes ``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) and 32-bit integer (``I``, whose
  values are taken as 16-bit, 0 to 65535) images are scaled to 8 bits (value / 257, rounded; ``I`` values
  outside 0-65535 are clipped), then made RGB with the three channels equal;
* every other mode is converted by PIL's ``convert("RGB")``, as open_clip's own transform does (an alpha
  channel is dropped, not composited; palette images take their palette's colours).

open_clip's transform converts with ``convert("RGB")`` alone: it ignores EXIF orientation and clips
16-bit values above 255 to white. Every unreadable image is a :class:`~npc.csv_format.DataError` naming
the file, which ``--skip_unreadable_images`` turns into a skip where the run allows one.
"""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

from npc.csv_format import DataError

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ORIENTATION = 0x0112  # the EXIF tag
# What PIL raises for a file it cannot decode (UnidentifiedImageError is an OSError), and the
# decompression-bomb error and warning (the warning is raised as an error here).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


def _reason(e: BaseException) -> str:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"{str(e).split(', could be')[0]} (PIL's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS: "
                f"make the image smaller)")
    return str(e) or type(e).__name__


def _open(path) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(path)


def to_rgb(img: Image.Image) -> Image.Image:
    """The 8-bit RGB image of the rule above (orientation applied, 16-bit values scaled)."""
    if img.getexif().get(ORIENTATION, 1) not in (1, None):
        img = ImageOps.exif_transpose(img)
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        img = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_rgb(path) -> Image.Image:
    """Image file ``path`` decoded by the rule above; an unreadable one is a :class:`DataError` naming it."""
    try:
        with _open(path) as img:
            out = to_rgb(img)
            out.load()
            return out
    except DECODE_ERRORS as e:
        raise DataError(f"cannot read image {path}: {_reason(e)}") from None


def load_image(path, preprocess):
    """``preprocess`` (an open_clip transform, or its PIL-level steps) of :func:`open_rgb`."""
    return preprocess(open_rgb(path))


def decode_problem(path) -> Optional[str]:
    """Why ``path`` cannot be decoded by the rule above, or None. Every byte is read; JPEGs are decoded at a
    reduced scale (fast)."""
    try:
        with _open(path) as img:
            img.draft(None, (1, 1))
            to_rgb(img).load()
        return None
    except DECODE_ERRORS as e:
        return _reason(e)


def header_problem(path) -> Optional[str]:
    """Why ``path`` is not an image file PIL knows, from its header alone, or None. An image over the
    decompression-bomb limit passes (its format is known): it is unreadable when decoded, where
    ``--skip_unreadable_images`` can leave it out."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path):
                return None
    except Image.DecompressionBombError:
        return None
    except DECODE_ERRORS as e:
        return _reason(e)
