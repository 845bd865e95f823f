"""The memory bank of clean pairs (docs/method.md section 3): its public names, from the modules of its jobs.

* npc/bank_math.py: the arithmetic (per-pair losses, the GMM's p(clean), the clean set, the neighbours);
* npc/bank_files.py: the files, written as one unit, and read back (the release's through a restricted unpickler);
* npc/bank_provenance.py: what a bank was built from, and whether an existing one can serve a run;
* npc/bank_build.py: building the bank of a run (under a lock; under torchrun each process encodes its share).
"""
from npc.bank_build import Unnormalized, build_bank, ensure_bank, with_unreadable_images
from npc.bank_files import (BankFileError, bank_dir_for, bank_files_match, bank_paths, load_bank, load_pclean,
                            partial_bank, partial_marker, pclean_path, remove_stale_temporaries, save_bank,
                            save_pclean, save_pclean_csv)
from npc.bank_math import (RECIPES, bank_quality, build_bank_index, build_memory_bank, clean_probability,
                           clean_probability_and_fit, clean_set, fit_loss_gmm, min_max_scaled, nearest, normalized,
                           per_sample_losses)
from npc.bank_provenance import (BANK_INPUT_FLAGS, BankInputs, bank_differences, bank_provenance, reusable_bank,
                                 say_what_is_replaced)

__all__ = ["BANK_INPUT_FLAGS", "BankFileError", "BankInputs", "RECIPES", "Unnormalized", "bank_differences",
           "bank_dir_for", "bank_files_match", "bank_paths", "bank_provenance", "bank_quality", "build_bank",
           "build_bank_index", "build_memory_bank", "clean_probability", "clean_probability_and_fit", "clean_set",
           "ensure_bank", "fit_loss_gmm", "load_bank", "load_pclean", "min_max_scaled", "nearest", "normalized",
           "partial_bank", "partial_marker", "pclean_path", "per_sample_losses", "remove_stale_temporaries",
           "reusable_bank", "save_bank", "save_pclean", "save_pclean_csv", "say_what_is_replaced",
           "with_unreadable_images"]
