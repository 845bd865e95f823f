"""The memory bank's arithmetic: per-pair losses, the GMM's p(clean), the clean set and the nearest clean pairs.

Pure functions of encoded features and losses (no files, no processes); docs/method.md section 3:

1. Per-sample symmetric InfoNCE of every training pair within its batch, batches of consecutive
   samples in file order (as the release computes it).
2. A 2-component Gaussian mixture (scikit-learn) on the min-max scaled losses; p(clean) is the
   posterior of the lower-mean component; clean = p(clean) > ``clean_threshold``.
3. For every training image, the clean pair whose image is most similar (cosine, image-image); for
   every caption, the clean pair whose caption is most similar (cosine, text-text). Top-1, no
   self-exclusion. Unlike the release, features are L2-normalized, so "cosine" holds.

``recipe="release"`` (``--bank_recipe release``) computes the release's bank instead, from the features
as the model outputs them (not normalized): the GMM on the raw losses, and for each (normalized) query
the clean pair of the largest dot product with its raw features, chosen by ``torch.topk`` over the clean
pairs (on the image side one key per clean pair, so an image with several clean captions is several
keys). bench/reference_parity.py checks it against the release's script.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from npc.detection import weight_auc
from npc.errors import UserError
from npc.loaders import BankIndex
from npc.losses import clip_loss_per_sample

RECIPES = ("project", "release")  # --bank_recipe


# ----------------------------------------------------------------------------- steps 1 and 2

def per_sample_losses(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray,
                      scale: float, batch_size: int) -> np.ndarray:
    """Loss of pair i within its batch of consecutive samples (the release's fixed, unshuffled order)."""
    ci = torch.as_tensor(caption_image, device=img_feats.device)
    out = []
    scale_t = torch.tensor(float(scale), device=img_feats.device)
    for start in range(0, txt_feats.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        out.append(clip_loss_per_sample(img_feats[ci[sl]], txt_feats[sl], scale_t).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def min_max_scaled(losses: np.ndarray) -> np.ndarray:
    """``losses`` mapped onto [0, 1] (all equal: 0): the GMM's input (its reg_covar 5e-4 is meant for [0, 1])."""
    x = np.asarray(losses, dtype=np.float64)
    span = x.max() - x.min()
    return (x - x.min()) / (span if span > 0 else 1.0)


def fit_loss_gmm(losses: np.ndarray, seed: int = 0, min_max: bool = True):
    """The release's 2-component GMM on the min-max scaled ``losses`` (``min_max=False``: on the losses as they
    are, as the release fits it): ``(its input, fitted sklearn GaussianMixture, index of its clean (lower-mean)
    component)``."""
    from sklearn.mixture import GaussianMixture

    x = min_max_scaled(losses) if min_max else np.asarray(losses, dtype=np.float64)
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(x[:, None])
    return x, gmm, int(np.argmin(gmm.means_.ravel()))


def clean_probability_and_fit(losses: np.ndarray, seed: int = 0, min_max: bool = True) -> Tuple[np.ndarray, Dict]:
    """Posterior of the low-loss component of a 2-component GMM (the release's GMM settings), and the fit:
    ``means``, ``variances``, ``weights`` (on the GMM's input), ``clean_component``, ``converged``."""
    x, gmm, clean = fit_loss_gmm(losses, seed) if min_max else fit_loss_gmm(losses, seed, min_max=False)
    fit = {"means": gmm.means_.ravel().tolist(), "variances": gmm.covariances_.ravel().tolist(),
           "weights": gmm.weights_.ravel().tolist(), "clean_component": clean, "converged": bool(gmm.converged_)}
    return gmm.predict_proba(x[:, None])[:, clean], fit


def clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    """Posterior of the low-loss component of a 2-component GMM (the release's GMM settings)."""
    return clean_probability_and_fit(losses, seed)[0]


# ----------------------------------------------------------------------------- step 3

def nearest(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 4096, max_scores: int = 1 << 28,
            topk: bool = False) -> torch.Tensor:
    """Index of the most similar key (cosine; both L2-normalized) for every query, in chunks of queries whose
    score block holds at most ``max_scores`` elements (1 GiB in fp32, whatever the number of keys: at 3M keys a
    block of 4096 queries would be 49 GB). The chunking does not change the result. Of equal scores the first
    key wins; ``topk``: whichever ``torch.topk`` returns, as the release picks."""
    chunk = max(1, min(chunk, max_scores // max(1, keys.shape[0])))
    out = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start:start + chunk] @ keys.t()
        out.append(torch.topk(scores, k=1, dim=1).indices[:, 0] if topk else scores.argmax(dim=1))
    return torch.cat(out)


def clean_set(p_clean: np.ndarray, clean_threshold: float) -> np.ndarray:
    """Indices of the clean pairs, p(clean) > ``clean_threshold``; an empty set is a :class:`UserError`."""
    clean = np.nonzero(p_clean > clean_threshold)[0]
    if len(clean) == 0:
        raise UserError(f"no training pair has p(clean) > {clean_threshold} (--clean_threshold); "
                        f"the memory bank would be empty")
    return clean


def build_bank_index(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray,
                     p_clean: np.ndarray, clean_threshold: float = 0.9, recipe: str = "project") -> BankIndex:
    """The bank's entries from the features (``recipe="release"``: not normalized) and p(clean)."""
    clean = clean_set(p_clean, clean_threshold)
    if recipe == "release":
        return _release_bank_index(img_feats, txt_feats, caption_image, clean)
    # Text side: the clean caption most similar to each caption.
    txt_bank = clean[nearest(txt_feats, txt_feats[torch.as_tensor(clean, device=txt_feats.device)]).cpu().numpy()]
    # Image side: the most similar image among images with a clean caption; of that image's clean
    # captions, the one the GMM is most sure about.
    clean_images = np.unique(caption_image[clean])
    best_caption = np.full(int(caption_image.max()) + 1, -1, dtype=np.int64)
    order = clean[np.argsort(p_clean[clean], kind="stable")]  # ascending: the last write wins
    best_caption[caption_image[order]] = order
    near = clean_images[nearest(img_feats, img_feats[torch.as_tensor(clean_images, device=img_feats.device)]).cpu().numpy()]
    img_bank = best_caption[near]
    return BankIndex(image_bank=img_bank.astype(np.int64), text_bank=txt_bank.astype(np.int64))


def _release_bank_index(img_raw: torch.Tensor, txt_raw: torch.Tensor, caption_image: np.ndarray,
                        clean: np.ndarray) -> BankIndex:
    """The release's neighbours: normalized queries against the clean pairs' raw features (one key per clean
    pair on both sides), top-1 by ``torch.topk``. An image's entry is that of its pairs' queries (all equal)."""
    ci = torch.as_tensor(caption_image, device=img_raw.device)
    keys = torch.as_tensor(clean, device=img_raw.device)
    img_q = img_raw / img_raw.norm(dim=1, keepdim=True)
    txt_q = txt_raw / txt_raw.norm(dim=1, keepdim=True)
    txt_bank = clean[nearest(txt_q, txt_raw[keys], topk=True).cpu().numpy()]
    img_bank = clean[nearest(img_q, img_raw[ci[keys]], topk=True).cpu().numpy()]
    return BankIndex(image_bank=img_bank.astype(np.int64), text_bank=txt_bank.astype(np.int64))


def normalized(feats: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm (as the release's CLIP normalizes its features)."""
    return feats / feats.norm(dim=1, keepdim=True)


def bank_quality(p_clean: np.ndarray, clean_threshold: float, noise_mask: Optional[np.ndarray]) -> Dict:
    clean = p_clean > clean_threshold
    info = {"n_pairs": int(len(clean)), "n_clean": int(clean.sum()), "clean_fraction": float(clean.mean())}
    if noise_mask is None:  # real noise: nothing to compare with
        info["precision"] = info["recall"] = "not measurable (no ground-truth noise mask)"
    else:
        truly_clean = ~np.asarray(noise_mask, dtype=bool)
        hit = int((clean & truly_clean).sum())
        info["precision"] = hit / max(int(clean.sum()), 1)
        info["recall"] = hit / max(int(truly_clean.sum()), 1)
        if truly_clean.any() and (~truly_clean).any():
            info["p_clean_auc"] = weight_auc(p_clean, ~truly_clean)
    return info


def build_memory_bank(img_feats: torch.Tensor, txt_feats: torch.Tensor, split, scale: float, *,
                      batch_size: int, clean_threshold: float = 0.9, noise_mask: Optional[np.ndarray] = None,
                      seed: int = 0, recipe: str = "project", known_clean: Optional[np.ndarray] = None
                      ) -> Tuple[BankIndex, Dict, np.ndarray]:
    """Steps 1-3 from encoded features (L2-normalized; ``recipe="release"``: as the model outputs them) of
    ``split`` (its ``caption_image``, ``num_images`` and length). Returns the bank, a summary, and p(clean).
    ``known_clean``: indices of pairs a person marked right (``--pair_decisions``): their p(clean) is 1 whatever
    the GMM says, so they are in the clean set (and in the baselines' p(clean))."""
    from npc.self_check import separability

    if recipe not in RECIPES:
        raise ValueError(f"bank recipe {recipe!r}: one of {RECIPES}")
    raw_img, raw_txt = img_feats, txt_feats
    if recipe == "release":
        img_feats, txt_feats = normalized(img_feats), normalized(txt_feats)
    losses = per_sample_losses(img_feats, txt_feats, split.caption_image, scale, batch_size)
    p_clean, fit = clean_probability_and_fit(losses, seed=seed, min_max=recipe == "project")
    decided = 0
    if known_clean is not None and len(known_clean):
        known_clean = np.asarray(known_clean, dtype=np.int64)
        decided = int((p_clean[known_clean] <= clean_threshold).sum())  # the GMM had them not clean
        p_clean = p_clean.copy()
        p_clean[known_clean] = 1.0
    bank = build_bank_index(raw_img, raw_txt, split.caption_image, p_clean, clean_threshold, recipe=recipe)
    info = bank_quality(p_clean, clean_threshold, noise_mask)
    info["self_check"] = separability(img_feats, txt_feats, split.caption_image, p_clean, fit,
                                      what="the training pairs")
    if known_clean is not None:
        info.update(decided_right=int(len(known_clean)), decided_right_gmm_not_clean=decided)
    info.update(clean_threshold=clean_threshold, bank_batch_size=batch_size,
                self_image_fraction=float(np.mean(split.caption_image[bank.image_bank] == np.arange(split.num_images))),
                self_text_fraction=float(np.mean(bank.text_bank == np.arange(len(split)))))
    return bank, info, p_clean
