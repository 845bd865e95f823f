"""Web-scale pairs in webdataset tar shards, as img2dataset writes them (docs/shards.md).

A split is one or more uncompressed tar shards: ``--train_data 'DIR/{00000..00099}.tar'`` (open_clip's
brace notation; ``::`` joins several), a single ``.tar``, or a text file listing shard paths, one a line
(relative to the list's folder, or absolute). A sample is the members of one key (the member name up to
the first dot of its file name): an image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ...), its caption
(``.txt``, UTF-8) and anything else (img2dataset's ``.json``), which is ignored. A pair's key is
``<shard file name>:<sample key>``.

Random access (every NPC step needs the memory-bank pairs of its batch, anywhere in the data): each shard's
members are indexed once, by the standard library's ``tarfile``, into ``<shard>.npcidx.json`` beside it
(written atomically): every sample's key, its image member's offset and size, and its caption. Indexing checks
the shard whole (tar's end-of-archive marker, no member twice). The index records the shard's size, modification
time, inode change time and inode number, and is rebuilt when any differs (a rewrite with the old modification
time set back changes the change time) or when its entries are not a valid index of the shard. An image is then a
:class:`npc.images.TarMember` (shard, offset, size, name) that the one decoding rule (npc/images.py) reads
with one seek. Files derived from a split go beside its shards, as CSV's go beside the CSV:
``<stem>.train_caps.txt``, ``<stem>.<r>_noise_train_caps.txt`` and ``<stem>.memory_bank/<model>/``, where
``<stem>`` is the ``--train_data`` file name without ``.tar`` (braces and commas dropped).

Captions are one line each in the derived caption files: a line break inside a caption becomes a space, and
the spaces around it are removed.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Dict, List, Tuple


from npc.data import Split
from npc.errors import DataError, WriteError
from npc.images import TarMember
from npc.io import atomic_write_text, one_line
from npc.noise import TRAIN_CAPS
from npc.sources import register
from npc.sources.base import Dataset, SplitFiles, group_pairs, split_of_good_parts

log = logging.getLogger("npc")

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CAPTION_EXT = "txt"
INDEX_SUFFIX = ".npcidx.json"
INDEX_FORMAT = "npc shard index"
INDEX_VERSION = 1


# ----------------------------------------------------------------------------- which shards a flag names

def expand_braces(pattern: str) -> List[str]:
    """open_clip's (braceexpand's) notation: ``{000..012}`` a range of numbers (zero-padded to the first
    bound's width), ``{a,b}`` alternatives; several groups multiply. A brace without its pair stays itself."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[end], 0)
        if depth == 0:
            break
    else:
        return [pattern]
    body, head, tail = pattern[start + 1:end], pattern[:start], pattern[end + 1:]
    m = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        width = len(m.group(1)) if m.group(1).startswith("0") else 0
        step = 1 if b >= a else -1
        options = [str(k).zfill(width) for k in range(a, b + step, step)]
    else:
        options, depth, cur = [], 0, ""
        for c in body:  # split on the commas outside nested braces
            depth += {"{": 1, "}": -1}.get(c, 0)
            if c == "," and depth == 0:
                options.append(cur)
                cur = ""
            else:
                cur += c
        options.append(cur)
        options = [o for opt in options for o in expand_braces(opt)]
        if len(options) == 1:  # "{x}": not a group
            options = ["{" + options[0] + "}"]
    return [h + o + t for o in options for h in [head] for t in expand_braces(tail)]


def shard_paths(spec: str, flag: str) -> List[Path]:
    """The shards ``spec`` names (``flag``: the flag that gave it, for messages); every one must exist."""
    if not spec:
        raise DataError(f"--dataset webdataset: {flag} is empty: give shards (DIR/{{00000..00009}}.tar, a .tar, or "
                        f"a text file listing shards)")
    shards: List[Path] = []
    for part in spec.split("::"):
        if "{" in part or part.endswith(".tar"):
            shards += [Path(p) for p in expand_braces(part)]
            continue
        listing = Path(part)
        if not listing.is_file():
            raise DataError(f"{flag} {part}: no such file (expected a .tar shard, a brace pattern such as "
                            f"DIR/{{00000..00009}}.tar, or a text file listing shards)")
        try:
            lines = listing.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{flag} {part}: cannot read the list of shards: {e}") from None
        for k, line in enumerate(lines, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                if line.endswith(".tar") or "{" in line:
                    shards += [listing.parent / p for p in expand_braces(line)]  # an absolute path stays itself
                else:
                    raise DataError(f"{listing}, line {k}: {line!r} is not a .tar shard ({flag})")
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise DataError(f"{flag} {spec}: {len(missing)} of {len(shards)} shard(s) not found, e.g. {missing[0]}")
    if not shards:
        raise DataError(f"{flag} {spec}: names no shard")
    names = [p.name for p in shards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{flag} {spec}: the shard name {twice[0]} is listed twice (a pair's key is its shard's "
                        f"file name and its sample key)")
    return shards


# ----------------------------------------------------------------------------- a shard's index

def index_path(shard) -> Path:
    return Path(f"{shard}{INDEX_SUFFIX}")


def _caption(raw: bytes, shard: Path, member: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{shard}: member {member}: the caption is not UTF-8 ({e.reason} at byte {e.start})") from None
    return one_line(text)


# The first bytes of a compressed file (a shard must be an uncompressed tar: random access needs plain offsets).
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
BLOCK = 512  # tar's block: a header, and the end-of-archive marker's zero blocks


def _compression(shard: Path) -> str:
    with open(shard, "rb") as f:
        head = f.read(8)
    return next((name for magic, name in COMPRESSED if head.startswith(magic)), "")


def _cut_short(shard: Path, after: str, why: str) -> DataError:
    return DataError(f"{shard}: the shard is cut short ({why}{', after the member ' + after if after else ''}): "
                     f"an incomplete copy or download; copy the shard again (or rebuild it), then run again")


def build_index(shard: Path) -> List[list]:
    """Each sample of ``shard``, in member order: ``[key, image extension, offset, size, caption]``. The shard is
    checked whole: a compressed file, a shard cut short (inside a member, inside a header, or without tar's
    end-of-archive marker), a sample without an image or a caption, with two images or two captions, or with an
    empty caption is a :class:`DataError` naming the shard (and the key)."""
    compressed = _compression(shard)
    if compressed:
        raise DataError(f"{shard}: a {compressed}-compressed file; webdataset shards are read by random access: "
                        f"decompress the shards first (e.g. gunzip), and name the .tar files")
    samples: Dict[str, list] = {}
    last = ""
    try:
        with tarfile.open(shard, mode="r:") as tf:
            for m in tf:
                last = m.name
                if not m.isfile():
                    continue
                folder, _, base = m.name.rpartition("/")
                if "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                key, ext = (f"{folder}/{stem}" if folder else stem), ext.lower()
                s = samples.setdefault(key, [key, None, None, None, None])
                if ext in IMAGE_EXTS:
                    if s[1] is not None:
                        raise DataError(f"{shard}: sample {key} has two images ({key}.{s[1]}, {m.name})")
                    s[1:4] = [ext, m.offset_data, m.size]
                elif ext == CAPTION_EXT:
                    if s[4] is not None:
                        raise DataError(f"{shard}: sample {key} has two captions (the member {m.name} twice): a "
                                        f"shard holds one {key}.txt per sample; rebuild the shard without the copy")
                    caption = _caption(tf.extractfile(m).read(), shard, m.name)
                    if not caption:
                        raise DataError(f"{shard}: sample {key}: empty caption ({m.name})")
                    s[4] = caption
            end = tf.offset  # where the next header would start: tar's end-of-archive marker must be there
    except tarfile.TarError as e:
        if not last:
            raise DataError(f"{shard}: not a tar file ({e}); webdataset shards are uncompressed tar files") from None
        raise _cut_short(shard, last, f"{e}") from None
    with open(shard, "rb") as f:
        f.seek(end)
        marker = f.read(BLOCK)
    if len(marker) < BLOCK or marker.count(0) != BLOCK:
        raise _cut_short(shard, last, "it ends inside a tar header" if 0 < len(marker) < BLOCK else
                         "no end-of-archive marker" if not marker else "bytes that are no tar header")
    out = []
    for key, s in samples.items():
        if s[1] is None and s[4] is None:
            continue  # only other members (a .json): not a pair
        if s[1] is None:
            raise DataError(f"{shard}: sample {key} has a caption ({key}.txt) but no image "
                            f"({', '.join('.' + e for e in IMAGE_EXTS)})")
        if s[4] is None:
            raise DataError(f"{shard}: sample {key} has an image ({key}.{s[1]}) but no caption ({key}.txt)")
        out.append(s)
    return out


def _index_problem(samples, shard_size: int) -> str:
    """Why ``samples`` (a saved index's) cannot be the index of a shard of ``shard_size`` bytes, or ``""``."""
    if not isinstance(samples, list):
        return f"'samples' is a {type(samples).__name__}, not a list"
    if not samples:
        return "no samples"
    keys = set()
    for n, s in enumerate(samples):
        if not (isinstance(s, list) and len(s) == 5):
            return f"samples[{n}] is not [key, extension, offset, size, caption]"
        key, ext, offset, size, caption = s
        if not (isinstance(key, str) and key and ext in IMAGE_EXTS and isinstance(offset, int) and isinstance(size, int)
                and not isinstance(offset, bool) and 0 <= offset and 0 <= size and offset + size <= shard_size):
            return f"samples[{n}] is not a sample of the shard"
        if not (isinstance(caption, str) and caption and caption == one_line(caption)):
            return f"samples[{n}] has no caption (found {caption!r:.40})"
        if key in keys:
            return f"the key {key} twice"
        keys.add(key)
    return ""


def _shard_stamp(st) -> dict:
    """What identifies a shard's bytes without reading them: its size, modification time, and its inode's change
    time and number (a rewrite changes the change time even when the modification time is set back)."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


_INDEXES: Dict[Tuple, List[list]] = {}


def shard_index(shard: Path) -> List[list]:
    """``shard``'s samples (:func:`build_index`): from ``<shard>.npcidx.json`` when it was built from the shard
    as it is now (:func:`_shard_stamp`) and holds a valid index, else built and written there (atomically; a
    folder that cannot be written keeps it in memory for this process)."""
    st = os.stat(shard)
    stamp = _shard_stamp(st)
    key = (str(shard), *stamp.values())
    if key in _INDEXES:
        return _INDEXES[key]
    path = index_path(shard)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = None
    problem = ""
    if (isinstance(saved, dict) and saved.get("format") == INDEX_FORMAT and saved.get("version") == INDEX_VERSION
            and all(saved.get(k) == v for k, v in stamp.items())):
        problem = _index_problem(saved.get("samples"), st.st_size)
        if not problem:
            _INDEXES[key] = saved["samples"]
            return saved["samples"]
    samples = build_index(shard)
    if problem:
        log.warning(f"warning: {path} is not a valid index of {shard.name} ({problem}; edited?): indexed the shard "
                    f"anew")
    text = json.dumps({"format": INDEX_FORMAT, "version": INDEX_VERSION, "shard": shard.name, **stamp,
                       "samples": samples}, ensure_ascii=False, separators=(",", ":"))
    try:
        atomic_write_text(path, text + "\n")
    except OSError as e:
        why = "a read-only folder" if isinstance(e, WriteError) else e
        log.warning(f"warning: cannot write the index of {shard} beside it ({why}): it is rebuilt at every start")
    _INDEXES[key] = samples
    return samples


def read_shards(spec: str, split: str, flag: str) -> Split:
    """Split ``split`` of the shards ``spec`` names: one pair per sample, in shard order then member order."""
    captions, ids, refs = [], [], []
    for shard in shard_paths(spec, flag):
        for key, ext, offset, size, caption in shard_index(shard):
            ids.append(f"{shard.name}:{key}")
            refs.append(TarMember(str(shard), offset, size, f"{key}.{ext}"))
            captions.append(caption)
    if len(ids) < 2:
        raise DataError(f"{flag} {spec}: the {split} split has {len(ids)} sample(s); retrieval needs at least 2")
    return group_pairs(split, zip(ids, ids, refs, captions, ids), caps_file=Path(spec))


def derived_path(spec: str, name: str) -> Path:
    """A file derived from a split's shards, beside them: ``<stem>.<name>``."""
    first = Path(spec.split("::")[0])
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", first.name[:-4] if first.name.endswith(".tar") else first.stem)
    stem = stem.strip("_.") or "shards"
    folder = first.parent
    if "{" in str(folder):
        folder = shard_paths(spec, "--train_data")[0].parent
    return folder / f"{stem}.{name}"


# ----------------------------------------------------------------------------- the source

@register
class WebdatasetShards(SplitFiles):
    format = "webdataset"
    definitions = (Dataset("webdataset", "image-text pairs in webdataset tar shards (--train_data "
                           "'DIR/{00000..00009}.tar'; docs/shards.md)", num_anns=1),)
    key_name = "sample"  # <shard file name>:<sample key>
    key_meaning = "the sample as <shard file name>:<sample key> (its __key__ in the shard)"
    label = "webdataset shards"
    file_hint = "'DIR/{00000..00009}.tar' (or a .tar, or a text file listing shards)"

    def expected_files(self) -> str:
        return ("webdataset tar shards (--train_data, --dev_data, --test_data: a .tar, a brace pattern such as "
                "DIR/{00000..00009}.tar, or a text file listing shards)")

    def spec(self, split: str) -> str:
        return self.split_spec(split)

    @classmethod
    def found(cls, data) -> bool:
        """``--train_data`` names shards: a .tar, a brace pattern, ``::``-joined parts, or a list of shards."""
        spec = str(data.train_data or "")
        if spec.endswith(".tar") or "{" in spec or "::" in spec:
            return True
        try:
            with open(spec, encoding="utf-8") as f:
                first = next((ln.strip() for ln in f if ln.strip() and not ln.startswith("#")), "")
        except (OSError, UnicodeDecodeError):
            return False
        return first.endswith(".tar") or "{" in first

    def inputs(self, split: str) -> List[Path]:
        return shard_paths(self.spec(split), self.where(split))

    def train_label(self) -> str:
        return self.spec("train")

    def parse_split(self, split: str) -> Split:
        # Every image is a member the shard's index found: there is no file to check. Decoding problems are
        # found when the image is read (check_data.py --decode reads them all).
        return read_shards(self.spec(split), split, self.where(split))

    def check_image_files(self, split: Split, show: int = 5) -> None:
        pass  # members of indexed shards

    def split_problems(self, split: str):
        """Every shard of the split that cannot be read, each on its own (check_data.py)."""
        first = super().split_problems(split)
        if not first[1]:
            return first
        try:
            shards = shard_paths(self.spec(split), self.where(split))
        except DataError:
            return first
        out, problems = split_of_good_parts(shards, shard_index, lambda good: read_shards(
            "::".join(str(p) for p in good), split, self.where(split)))
        if out is not None:
            out.key_name = self.key_name
        return out, problems

    def train_caps_path(self) -> Path:
        return derived_path(self.spec("train"), TRAIN_CAPS)

    def listed_at(self, split: Split, image_index: int) -> str:
        ref = split.image_paths[image_index]
        return f"{ref.shard}, sample {split.image_ids[image_index].split(':', 1)[1]}"

    def missing_images_advice(self) -> str:
        return ("missing images: a shard is shorter than its index says (cut short, or rewritten in the same "
                "second): copy the shard again, or delete its .npcidx.json beside it to index it anew")

    def write_cleaned(self, split: Split, keep, out) -> List[Path]:
        """A keep-list of the pairs kept, as DataComp's subsets are given: ``out`` (``.npy``) an array of their keys
        (``<shard file name>:<sample key>``), and the same keys one a line in ``<out stem>.txt``; the shards are not
        rewritten."""
        import numpy as np

        from npc.io import atomic_write_bytes, atomic_write_lines

        out = self.cleaned_target(out, ".npy")
        keys = [q for q, k in zip(split.keys, keep) if k]
        buf = io.BytesIO()
        np.save(buf, np.array(keys, dtype=str))
        atomic_write_bytes(out, buf.getvalue())
        txt = out.with_suffix(".txt")
        atomic_write_lines(txt, keys)
        return [out, txt]

    def bank_dir(self, model_key) -> Path:
        return derived_path(self.spec("train"), "memory_bank") / model_key()
