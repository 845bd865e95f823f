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

    @classmethod
    def found(cls, data) -> bool:
        return D.annotation_dir(data.dataset_root).is_dir()

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

    def bank_dir(self, model_key) -> Path:
        return D.memory_bank_dir(self.data.dataset_root)
