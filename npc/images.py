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
16-bit values above 255 to white.

Unreadable images, one policy in every format and script (:data:`UNREADABLE`, :data:`UNREADABLE_ADVICE`,
:func:`unreadable_message`): an image is unreadable when PIL cannot open or decode it, whatever its name
(a non-image file named ``.jpg``, a download cut short, an image over the decompression-bomb limit).
Without ``--skip_unreadable_images`` an unreadable image stops the run with one message naming it (the
user's path, or ``shard:member``) and the advice; with it, the pairs of the image are left out: those of
an evaluation split before training, those of the training split where the memory bank's encoding or a
batch meets it (counted in the log).

An image is a file path, or a :class:`TarMember`: one member of a tar shard (webdataset shards,
npc/sources/webdataset_shards.py). Everything that reads, checks or sizes an image takes either
(:func:`image_stat`, :func:`image_size`, :func:`image_exists`, :func:`image_sha256`).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from npc.csv_format import DataError

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
ORIENTATION = 0x0112  # the EXIF tag
# What PIL raises for a file it cannot decode (UnidentifiedImageError is an OSError), and the
# decompression-bomb error and warning (the warning is raised as an error here).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                 Image.DecompressionBombWarning)


@dataclass(frozen=True)
class TarMember:
    """An image stored as member ``name`` of tar file ``shard``: its data's ``size`` bytes start at byte
    ``offset`` of the shard (a shard index records them). Small and picklable: loader workers get it as they
    get a path."""

    shard: str
    offset: int
    size: int
    name: str

    def __str__(self) -> str:  # how messages name it: the shard and the member
        return f"{self.shard}:{self.name}"

    def read(self) -> bytes:
        """The member's bytes; a shard shorter than its index says is an :class:`OSError` naming it."""
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard} ends inside member {self.name} (the shard was cut short or rewritten)")
        return data


def image_file(ref):
    """What ``PIL.Image.open`` reads for image ``ref``: the path, or a member's bytes in memory."""
    return io.BytesIO(ref.read()) if isinstance(ref, TarMember) else ref


def image_stat(ref) -> Optional[Tuple[int, int]]:
    """``(size in bytes, modification time in ns)`` of image ``ref`` (a member: its size and its shard's time),
    or None when it is missing."""
    try:
        st = os.stat(ref.shard if isinstance(ref, TarMember) else ref)
    except OSError:
        return None
    if isinstance(ref, TarMember):
        return (ref.size, st.st_mtime_ns) if ref.offset + ref.size <= st.st_size else None
    return st.st_size, st.st_mtime_ns


def image_size(ref) -> Optional[int]:
    """The size in bytes of image ``ref``, or None when it is missing."""
    st = image_stat(ref)
    return None if st is None else st[0]


def image_exists(ref) -> bool:
    """Whether image ``ref`` is there: a file, or a member inside its shard."""
    if isinstance(ref, TarMember):
        return image_stat(ref) is not None
    return os.path.isfile(ref)


def image_identity(ref):
    """What distinguishes image ``ref`` from any other on this machine (a file's device and inode, a member's
    shard and offset), or None when it is missing."""
    try:
        st = os.stat(ref.shard if isinstance(ref, TarMember) else ref)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) + ((ref.offset,) if isinstance(ref, TarMember) else ())


def image_sha256(ref) -> str:
    """Hex SHA-256 of image ``ref``'s bytes (a file's is cached per size and modification time)."""
    if isinstance(ref, TarMember):
        return hashlib.sha256(ref.read()).hexdigest()
    from npc.io import cached_file_sha256

    return cached_file_sha256(ref)


#: What counts as an unreadable image, and what to do about one: every message about one says it.
UNREADABLE = "a file PIL cannot open or decode, whatever its name"
UNREADABLE_ADVICE = ("an unreadable image (a file PIL cannot open or decode, whatever its name: damaged, cut short, or "
                     "not an image) stops the run: replace or remove it, or pass --skip_unreadable_images to leave "
                     "out its pairs")


def unreadable_message(ref, why: str, where: Optional[str] = None) -> str:
    """The one message about an unreadable image ``ref`` (named as the user names it: the path, or
    ``shard:member``), why it is unreadable, where it is listed, and :data:`UNREADABLE_ADVICE`."""
    return f"cannot read image {ref}: {why}{f' ({where})' if where else ''}; {UNREADABLE_ADVICE}"


class UnreadableImageError(DataError):
    """An image PIL cannot open or decode: ``ref`` (a path or a :class:`TarMember`) and ``why``."""

    def __init__(self, ref, why: str, where: Optional[str] = None):
        super().__init__(unreadable_message(ref, why, where))
        self.ref, self.why = ref, why


def _reason(e: BaseException) -> str:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (f"{str(e).split(', could be')[0]} (PIL's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS: "
                f"make the image smaller)")
    if isinstance(e, UnidentifiedImageError):  # PIL names the file it was given: a path, or bytes in memory
        return "not an image file PIL can open (its content is no image format PIL knows)"
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the image", str(e)) or type(e).__name__


def _open(path) -> Image.Image:
    """``Image.open`` with PIL's decompression-bomb warning raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(image_file(path))


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
        raise UnreadableImageError(path, _reason(e)) from None


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
            with Image.open(image_file(path)):
                return None
    except Image.DecompressionBombError:
        return None
    except DECODE_ERRORS as e:
        return _reason(e)
