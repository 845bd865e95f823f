"""Batches: the datasets, samplers and loaders that turn a split into training and evaluation batches.

Training batches are assembled per batch, not per sample: the images and captions needed by a batch
and by its memory-bank entries are decoded and tokenized once each, then referenced by position.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from npc.errors import DataError
from npc.data import Split
from npc.images import UnreadableImageError, load_image, unreadable_message  # the one decoding rule and policy
from npc.errors import ConfigError


class ImageDataset(Dataset):
    """Each image of a split once (evaluation decodes every image once, not once per caption)."""

    def __init__(self, paths: Sequence[Path], preprocess, split: Optional[Split] = None):
        self.paths = list(paths)
        self.preprocess = preprocess
        self.split = split  # names the split and caption lines of an unreadable image

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return load_image(self.paths[i], self.preprocess)
        except UnreadableImageError as e:
            if self.split is None:
                raise
            raise DataError(unreadable_message(e.ref, e.why, self.split.describe_image(i))) from None


@dataclass
class BankIndex:
    """Top-1 memory-bank entries: a sample index for every training image and every caption."""

    image_bank: np.ndarray  # (n_images,)  image index -> clean sample index
    text_bank: np.ndarray   # (n_samples,) sample index -> clean sample index


class PairBatches(Dataset):
    """Batch-level training dataset: ``ds[list_of_sample_indices]`` returns a whole batch.

    The batch holds each distinct image and caption once (``images``, ``texts``) plus position
    tensors saying which row each pair uses. With a memory bank the batch also carries, for every
    pair, its image-side bank pair ``(bankI_img, bankI_txt)`` and text-side bank pair
    ``(bankT_img, bankT_txt)``; bank entries are often the pair itself, so this dedup saves decoding
    and encoding (the reference decodes three images per pair).
    """

    def __init__(self, split: Split, preprocess, tokenizer, bank: Optional[BankIndex] = None,
                 image_source=None, skip_unreadable: bool = False):
        self.split = split
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.bank = bank
        self.image_source = image_source  # optional callable(list of image indices) -> uint8/float tensor
        self.skip_unreadable = skip_unreadable

    def __len__(self):
        return len(self.split)

    def load_images(self, image_indices: np.ndarray) -> torch.Tensor:
        if self.image_source is not None:
            return self.image_source(image_indices)
        images = []
        for i in image_indices:
            try:
                images.append(load_image(self.split.image_paths[i], self.preprocess))
            except UnreadableImageError as e:  # the one message (npc/images.py), with where the image is listed
                raise _UnreadableImage(unreadable_message(e.ref, e.why, self.split.describe_image(i)), int(i)) from None
        return torch.stack(images)

    def caption_groups(self, sample: np.ndarray) -> Dict[str, np.ndarray]:
        """Sample indices of each pair and of its image-side and text-side bank pairs."""
        groups = {"pair": sample}
        if self.bank is not None:
            groups["bankI"] = self.bank.image_bank[self.split.caption_image[sample]]
            groups["bankT"] = self.bank.text_bank[sample]
        return groups

    def __getitem__(self, indices) -> Dict[str, torch.Tensor]:
        sample = np.asarray(indices, dtype=np.int64)
        skipped = []
        while True:
            try:
                out = self.assemble(sample)
                break
            except _UnreadableImage as e:
                if not self.skip_unreadable:
                    raise DataError(str(e)) from None
                skipped.append(e.image_index)  # drop every pair that needs it, as itself or as a bank entry
                uses = self.split.caption_image[np.stack(list(self.caption_groups(sample).values()))]
                sample = sample[~np.isin(uses, skipped).any(axis=0)]
                if not len(sample):
                    raise DataError(f"every pair of a batch needs an unreadable image, e.g. {e}") from None
        if self.skip_unreadable:
            out["skipped_images"] = torch.tensor(skipped, dtype=torch.int64)
        return out

    def assemble(self, sample: np.ndarray) -> Dict[str, torch.Tensor]:
        cap_groups = self.caption_groups(sample)
        all_caps = np.concatenate(list(cap_groups.values()))
        uniq_caps, cap_pos = np.unique(all_caps, return_inverse=True)
        all_imgs = self.split.caption_image[all_caps]
        uniq_imgs, img_pos = np.unique(all_imgs, return_inverse=True)
        out = {
            "images": self.load_images(uniq_imgs),
            "texts": self.tokenizer([self.split.captions[i] for i in uniq_caps]),
            "index": torch.from_numpy(sample),
            "image_index": torch.from_numpy(self.split.caption_image[sample]),
        }
        b = len(sample)
        for k, name in enumerate(cap_groups):
            out[f"{name}_img"] = torch.from_numpy(img_pos[k * b:(k + 1) * b].astype(np.int64))
            out[f"{name}_txt"] = torch.from_numpy(cap_pos[k * b:(k + 1) * b].astype(np.int64))
        return out


class _UnreadableImage(DataError):
    """Raised inside :class:`PairBatches` for one image index; it becomes a skip or a :class:`DataError`."""

    def __init__(self, message: str, image_index: int):
        super().__init__(message)
        self.image_index = image_index


class EpochBatchSampler(Sampler):
    """Shuffled batches of sample indices, reproducible from (seed, epoch), sharded over ranks.

    Every rank draws the same permutation and takes its own contiguous slice of each global batch,
    so the union over ranks of one step is exactly the single-process batch of the same seed.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True, shuffle: bool = True, indices: Optional[np.ndarray] = None):
        """``indices``: draw batches from these sample indices only (``n`` = their number)."""
        if indices is not None and len(indices) != n:
            raise ValueError(f"{len(indices)} indices for a sampler of {n} samples")
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        if global_batch % world_size:
            raise ConfigError(f"--batch_size {global_batch} is not divisible by the {world_size} processes")
        if drop_last and n < global_batch:
            raise ConfigError(f"--batch_size {global_batch} is larger than the {n} training pairs")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world_size, self.drop_last, self.shuffle = rank, world_size, drop_last, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.n // self.global_batch if self.drop_last else -(-self.n // self.global_batch)

    def __iter__(self):
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.indices is not None:
            order = self.indices[order]
        local = self.global_batch // self.world_size
        for b in range(len(self)):
            batch = order[b * self.global_batch:(b + 1) * self.global_batch]
            yield batch[self.rank * local:(self.rank + 1) * local].tolist()


def train_loader(dataset: PairBatches, sampler: EpochBatchSampler, num_workers: int,
                 persistent: bool = True) -> DataLoader:
    """Batches of ``dataset`` in ``sampler``'s order. ``persistent=False``: workers start anew every
    epoch, so they see a dataset changed between epochs (a memory bank rebuilt during training)."""
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=persistent and num_workers > 0,
                      prefetch_factor=4 if num_workers > 0 else None)


def image_loader(split: Split, preprocess, batch_size: int, num_workers: int,
                 items: Optional[Sequence[int]] = None) -> DataLoader:
    """The split's images in order (``items``: only these image indices, in their order)."""
    dataset = ImageDataset(split.image_paths, preprocess, split)
    if items is not None:
        dataset = torch.utils.data.Subset(dataset, list(items))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=torch.cuda.is_available())
