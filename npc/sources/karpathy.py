"""MSCOCO and Flickr30K as Karpathy's split files hold them: ``<root>/dataset_coco.json`` (images in
``<root>/train2014/`` and ``<root>/val2014/`` under their original names) or
``<root>/dataset_flickr30k.json`` (images in ``<root>/flickr30k-images/`` or ``<root>/images/``).

Splits as SCAN derived them (:mod:`npc.karpathy`). Derived files go to ``<root>/annotations/karpathy/``:
``train_caps.txt`` (the training captions in split order, which the noise protocol shuffles), the noisy
splits, and ``memory_bank/``.
"""
from __future__ import annotations

from pathlib import Path

from npc import data as D
from npc.csv_format import DataError
from npc.noise import TRAIN_CAPS
from npc.sources import register
from npc.sources.base import DataSource, noisy_beside


@register
class KarpathyJson(DataSource):
    format = "karpathy"
    datasets = ("coco", "f30k")
    key_name = "sentid"  # the sentence id of the caption in the JSON
    expected_images = {"coco": (113_287, 5_000, 5_000), "f30k": (29_000, 1_014, 1_000)}  # Karpathy's val: 1,014

    @classmethod
    def found(cls, data) -> bool:
        from npc.karpathy import find_karpathy_json

        return find_karpathy_json(data.dataset_root, data.dataset) is not None

    def json_path(self) -> Path:
        from npc.karpathy import JSON_NAMES, find_karpathy_json

        path = find_karpathy_json(self.data.dataset_root, self.data.dataset)
        if path is None:
            raise DataError(f"--dataset_root {self.data.dataset_root}: neither the reference release's layout "
                            f"(annotations/scan_split/) nor Karpathy's {JSON_NAMES[self.data.dataset]} is "
                            f"there (docs/data.md)")
        return path

    def expected_files(self) -> str:
        from npc.karpathy import JSON_NAMES

        return f"Karpathy's split file {Path(self.data.dataset_root) / JSON_NAMES[self.data.dataset]}"

    def describe(self) -> str:
        return f"Karpathy's split file {self.json_path()}"

    def derived_dir(self) -> Path:
        return Path(self.data.dataset_root) / "annotations" / "karpathy"

    def read_split(self, split: str, check_images: bool) -> D.Split:
        from npc.karpathy import read_karpathy_split

        return read_karpathy_split(self.json_path(), self.data.dataset_root, self.data.dataset, split,
                                   num_anns=self.data.num_anns or 5, check_images=check_images)

    def noisy_train(self, log, check_images: bool):
        return noisy_beside(self.data, self.read_split("train", check_images), self.derived_dir() / TRAIN_CAPS,
                            self.json_path(), log)

    def listed_at(self, split: D.Split, image_index: int) -> str:
        from npc.karpathy import describe_entry, split_entries

        return describe_entry(self.json_path(), *split_entries(self.json_path(), self.data.dataset, split.name)[image_index])

    def missing_images_advice(self) -> str:
        root = Path(self.data.dataset_root)
        if self.data.dataset == "coco":
            return (f"missing images: MSCOCO's images go in {root / 'train2014'}/ and {root / 'val2014'}/ under their "
                    f"original names (COCO_val2014_000000391895.jpg): unpack the 2014 train and val images there")
        return (f"missing images: Flickr30K's images go in {root / 'flickr30k-images'}/ (or images/) under the names "
                f"the JSON gives")

    def bank_dir(self, model_key) -> Path:
        return self.derived_dir() / "memory_bank"
