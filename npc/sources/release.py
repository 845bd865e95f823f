"""The reference release's layout (the demo's too): ``<root>/images/`` and ``<root>/annotations/scan_split/``."""
from __future__ import annotations

from pathlib import Path

from npc import data as D
from npc.csv_format import DataError
from npc.sources import register
from npc.sources.base import DataSource


@register
class ReleaseLayout(DataSource):
    format = "release"
    datasets = ("demo", "coco", "f30k", "cc")
    key_name = "line"  # the caption's line in <split>_caps.txt
    expected_images = {"coco": (113_287, 5_000, 5_000), "f30k": (29_000, 1_000, 1_000),  # f30k: as in common use
                       "cc": (118_851, 1_000, 1_000)}

    @classmethod
    def found(cls, data) -> bool:
        return D.annotation_dir(data.dataset_root).is_dir()

    def expected_files(self) -> str:
        return f"the reference release's layout ({D.annotation_dir(self.data.dataset_root)}/)"

    def describe(self) -> str:
        return f"the reference release's layout at {self.data.dataset_root} (annotations/scan_split/)"

    def _root(self) -> Path:
        root = Path(self.data.dataset_root)
        if not root.is_dir():
            raise DataError(f"--dataset_root {root}: no such folder (the {self.data.dataset} dataset's images/ and "
                            f"annotations/scan_split/, or Karpathy's split file, are expected there; docs/data.md)")
        return root

    def read_split(self, split: str, check_images: bool) -> D.Split:
        return D.load_split(self._root(), self.data.dataset, split, self.data.num_anns, check_images=check_images)

    def noisy_train(self, log, check_images: bool):
        d = self.data
        return D.load_train_split(self._root(), d.dataset, d.num_anns, d.noise_ratio, noise_seed=d.noise_seed,
                                  noise_mode=d.noise_mode, log=log, check_images=check_images)

    def listed_at(self, split: D.Split, image_index: int) -> str:
        ids = D.annotation_dir(self.data.dataset_root) / f"{split.name}_ids.txt"
        k, i = split.num_anns, image_index
        at = f"{ids}, line {i + 1}" if split.name == "train" else f"{ids}, lines {i * k + 1}-{i * k + k}"
        if D.get_spec(self.data.dataset).image_name is None:  # Flickr30K: the id is a line of image_name.txt
            at += f"; {D.annotation_dir(self.data.dataset_root) / 'image_name.txt'}, line {int(split.image_ids[i]) + 1}"
        return at

    def missing_images_advice(self) -> str:
        images = Path(self.data.dataset_root) / "images"
        if self.data.dataset in ("coco", "demo"):
            return (f"missing images: every image goes in {images}/ as COCO_2014_<12-digit id>.jpg "
                    f"(dataset/MSCOCO_rename.py renames the 2014 files; or keep the original names and folders with "
                    f"Karpathy's dataset_coco.json instead, docs/data.md)")
        if D.get_spec(self.data.dataset).image_name is None:
            return f"missing images: every image goes in {images}/ under the name image_name.txt gives its id"
        return f"missing images: every image goes in {images}/ as <id>.jpg"

    def bank_dir(self, model_key) -> Path:
        return D.memory_bank_dir(self.data.dataset_root)
