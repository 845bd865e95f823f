"""What a memory bank was built from (its provenance), and whether an existing bank can serve a run.

The bank's info file records its inputs (the noisy split by content, its images by file and size, the model,
its initial weights by content, the GMM's settings); a run reuses a bank built from the same inputs, rebuilds one built for
another version of its split or cut short, and refuses one built with other settings, naming the flag.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from npc.bank_files import BankFileError, bank_dir_for, bank_files_match, bank_paths, load_bank, partial_bank
from npc.config import BankConfig, DataConfig, ModelConfig
from npc.io import file_sha256, read_json
from npc.loaders import BankIndex

log = logging.getLogger("npc")


@dataclass(frozen=True)
class BankInputs:
    """What a memory bank is built from besides the model: the data, the model's configuration (its initial
    weights key the bank), the GMM's settings and the batch of encoding."""

    data: DataConfig
    model: ModelConfig
    bank: BankConfig
    encode_batch_size: int
    num_workers: int = 0


# The bank's build inputs a run may ask differently, and the flag that sets each.
BANK_INPUT_FLAGS = {"vision_model": "--vision_model", "pretrained": "--pretrained", "weights": "--resume",
                    "clean_threshold": "--clean_threshold", "bank_batch_size": "--bank_batch_size",
                    "bank_seed": "--bank_seed", "bank_recipe": "--bank_recipe"}
DEFAULT_RECIPE = "project"  # an info file without ``bank_recipe`` was built with it (written only when another)


def bank_provenance(inputs: BankInputs, train_split, weights: Optional[Path] = None) -> Dict:
    """What a memory bank is built from: the noisy split (by content), the model, its initial weights (by
    content: npc/fingerprints.py) and the GMM's settings."""
    from npc.fingerprints import images_fingerprint, initial_weights_fingerprint

    d, m, b = inputs.data, inputs.model, inputs.bank
    recipe = b.bank_recipe
    return {"noisy_split": train_split.caps_file.name, "noisy_split_sha256": file_sha256(train_split.caps_file),
            "images_sha256": images_fingerprint(train_split), "noise_ratio": str(d.noise_ratio),
            "noise_mode": d.noise_mode, "vision_model": m.vision_model,
            "pretrained": str(m.pretrained), "initial_weights": initial_weights_fingerprint(d, m),
            "weights": str(weights) if weights else None,
            "clean_threshold": b.clean_threshold, "bank_batch_size": b.bank_batch_size, "bank_seed": b.bank_seed,
            **({} if recipe == DEFAULT_RECIPE else {"bank_recipe": recipe}),
            **_decisions_provenance(d)}


def _decisions_provenance(d: DataConfig) -> Dict:
    """``--pair_decisions``: the file's sha256 (its bank is a folder of its own: npc.bank_files.bank_dir_for)."""
    if not d.pair_decisions:
        return {}
    from npc.decisions import read_decisions

    return {"pair_decisions_sha256": read_decisions(d.pair_decisions).sha256}


def _same_initial_weights(key: str, built: Dict, wanted: Dict) -> bool:
    """``--pretrained`` named by another path, whose file holds the weights the bank was built from."""
    return key == "pretrained" and "initial_weights" in built and built["initial_weights"] == wanted["initial_weights"]


def bank_differences(built: Dict, wanted: Dict) -> list:
    """The settings a bank was built with (``built``, its info file) that differ from ``wanted``, one phrase each."""
    built = {"bank_recipe": DEFAULT_RECIPE, **built}
    wanted = {"bank_recipe": DEFAULT_RECIPE, **wanted}
    differ = [f"{flag} {wanted[k]} (the bank has {built.get(k)})" for k, flag in BANK_INPUT_FLAGS.items()
              if built.get(k) != wanted[k] and not _same_initial_weights(k, built, wanted)]
    if built.get("initial_weights", wanted["initial_weights"]) != wanted["initial_weights"]:
        differ.append(f"--pretrained {wanted['pretrained']}: other initial weights than the bank was built from "
                      f"(the content differs: {wanted['initial_weights'][:19]}, the bank has "
                      f"{built['initial_weights'][:19]})")
    return differ


def reusable_bank(inputs: BankInputs, train_split, wanted: Dict) -> Optional[BankIndex]:
    """The existing bank if it was built from ``wanted``; None if missing or built from another noisy split.

    A bank built with other settings (model, weights, threshold, batch, seed) is refused naming the
    flag; one without a record of its inputs (the release's, or older versions') is reused with a warning.
    """
    d = inputs.data
    bank_dir = bank_dir_for(d, inputs.model)
    img_path, _, info_path = bank_paths(bank_dir, d.noise_ratio, d.noise_mode)
    if not img_path.is_file():
        return None
    name = f"{img_path.parent}/{img_path.name.replace('_img_idx.npy', '_*')}"
    built = read_json(info_path) or {}
    if "batch_size" in built and "bank_batch_size" not in built:  # recorded by earlier versions
        built["bank_batch_size"] = built["batch_size"]
    partial = partial_bank(bank_dir, d.noise_ratio, d.noise_mode)
    if partial:
        log.info(f"memory bank: {name} is incomplete ({partial}: an interrupted build): rebuilding the bank")
        return None
    if "noisy_split_sha256" not in built:
        log.warning(f"memory bank: {name} has no record of what it was built from (the release's files, or an older "
                    f"version's): reused as is; pass --rebuild_bank to rebuild it from this run's inputs")
    elif built["noisy_split_sha256"] != wanted["noisy_split_sha256"]:
        log.info(f"memory bank: {name} was built for another version of {wanted['noisy_split']} (it was rebuilt "
                 f"since): rebuilding the bank")
        return None
    elif built.get("images_sha256", wanted["images_sha256"]) != wanted["images_sha256"]:
        log.info(f"memory bank: {name} was built from other images than the training split lists now (files "
                 f"renamed, swapped or replaced, or other sizes): rebuilding the bank")
        return None
    elif not bank_files_match(bank_dir, d.noise_ratio, d.noise_mode, built):
        log.info(f"memory bank: the files of {name} are not the ones {info_path.name} describes (an interrupted "
                 f"build?): rebuilding the bank")
        return None
    else:
        differ = bank_differences(built, wanted)
        if differ:
            raise BankFileError(f"memory bank {name} was built with other settings than this run asks for: "
                                   f"{'; '.join(differ)}. Pass --rebuild_bank to rebuild it for this run (it "
                                   f"replaces the files), or use the bank's settings")
    log.info(f"memory bank: reusing {name}")
    check = built.get("self_check")
    if isinstance(check, dict) and check.get("can_see") is False:
        log.warning(f"memory bank: {check.get('message')}")
    return load_bank(bank_dir, d.noise_ratio, train_split, d.noise_mode, trust_pickle=inputs.bank.trust_pickle)


def say_what_is_replaced(bank_dir: Path, d: DataConfig, wanted: Dict) -> None:
    """``--rebuild_bank`` (and get_memorybank.py) over an existing bank: one line naming it and, when its info
    file records them, the settings it was built with that this build changes."""
    img_path, _, info_path = bank_paths(bank_dir, d.noise_ratio, d.noise_mode)
    if not img_path.is_file():
        return
    name = f"{img_path.parent}/{img_path.name.replace('_img_idx.npy', '_*')}"
    built = read_json(info_path)
    if not built or "noisy_split_sha256" not in built:
        log.info(f"memory bank: replacing {name} (no record of what it was built from)")
        return
    differ = bank_differences(built, wanted)
    if built["noisy_split_sha256"] != wanted["noisy_split_sha256"]:
        differ.insert(0, f"another version of {wanted['noisy_split']}")
    log.info(f"memory bank: replacing {name}, "
             + (f"built with other settings: {'; '.join(differ)}" if differ else "built with the same settings"))
