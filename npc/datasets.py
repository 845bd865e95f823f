"""The datasets this project reads, in one registry: what ``--dataset`` accepts and what follows from it.

Each entry says where the dataset lives by default (relative to the repository), how many captions
each image has, how an image id becomes a file name, and which extra evaluations apply (MSCOCO's
1K folds). ``npc.params`` derives ``--dataset``'s choices and defaults from it, ``npc.data`` the
file naming, the engine the evaluations. Imports nothing heavy (``--help`` answers at once).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional


def _coco_name(image_id: str) -> str:
    return f"COCO_2014_{int(image_id):012d}.jpg"


def _cc_name(image_id: str) -> str:
    return f"{image_id}.jpg"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    num_anns: int                                # captions per image (0: any number, per image)
    integer_ids: bool                            # image ids are integers (MSCOCO, Flickr30K) or strings (CC120K)
    image_name: Optional[Callable[[str], str]]   # id -> file name; None: looked up in image_name.txt (Flickr30K)
    default_root: str                            # relative to the repository ("": given by flags)
    folds_1k: bool = False                       # the test split is also reported as the mean of 5 folds of 1K images
    description: str = ""


DATASETS: Dict[str, DatasetSpec] = {s.name: s for s in (
    # The demo is generated in MSCOCO's layout and naming, so it exercises the MSCOCO code path.
    DatasetSpec("demo", 5, True, _coco_name, "dataset/demo", description="the embedded generated dataset (MSCOCO layout)"),
    DatasetSpec("coco", 5, True, _coco_name, "dataset/MSCOCO", folds_1k=True, description="MSCOCO (SCAN split)"),
    DatasetSpec("f30k", 5, True, None, "dataset/Flickr30K", description="Flickr30K (SCAN split)"),
    DatasetSpec("cc", 1, False, _cc_name, "dataset/CC120K", description="Conceptual Captions 120K (real noise)"),
    # Your own data: images listed in CSV/TSV files, any number of captions per image (npc.data reads them).
    DatasetSpec("csv", 0, False, None, "", description="your own data in CSV/TSV files (--train_data, --dev_data, "
                                                       "--test_data; docs/own_data.md)"),
    # Web-scale pairs in webdataset tar shards (img2dataset's layout): one caption per sample.
    DatasetSpec("webdataset", 1, False, None, "", description="image-text pairs in webdataset tar shards "
                                                              "(--train_data 'DIR/{00000..00009}.tar'; docs/shards.md)"),
)}
