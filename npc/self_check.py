"""Can the model see these pairs? A check before its scores are trusted.

Every score this project gives a pair (the memory bank's p(clean), NPC's weights, the cosine) is the
model's opinion of how well a caption fits its image. A model that cannot tell the pairs apart (the
demo's base, trained on drawn scenes, shown photographs) gives scores that rank clean and wrong pairs
at chance, and nothing in the scores themselves says so. :func:`separability` measures it from the
features the run has already computed:

* ranking on the training split itself, for a random subset of at most ``max_images`` images and their
  captions: for each caption, the share of the subset's other captions that its image scores below it
  (``own_caption_auc``; 0.5 at chance); how often the caption an image ranks first is one of its own
  (i2t R@1) and how often the image a caption ranks first is its own (t2i R@1), chance ``1 / images``.
  Wrong captions lower all three (at 40% noise a perfect model's ``own_caption_auc`` is about 0.8).
* how well the GMM's two components separate (when p(clean) is given): the fraction of pairs it
  leaves undecided (0.1 < p(clean) < 0.9) and, with the GMM's fit, the gap between the components'
  means in units of their spreads. These are recorded, not voted on: clean data has one component.

The verdict ``can_see`` is on how the model ranks each pair's own caption among the other captions for
its image (``own_caption_auc``: the share of the subset's other captions that score below it, 0.5 at
chance, 1 when every pair's own caption is its image's best). R@1 is recorded but does not decide: on
data whose captions describe what many images share (the demo's scenes, many photographs of one
kind), a model that sees well still retrieves the exact image rarely. ``own_caption_auc`` must reach
:data:`MIN_OWN_AUC`, and be more than three standard errors of a blind model's above 0.5 on a small
split (``0.5 + 3 * 0.289 / sqrt(captions)``). A caption's own score and its candidates' come from the same
matrix product, and scores within :data:`TIE_TOLERANCE` count as ties (half below): identical captions under
a model that cannot see give 0.5, not what the rounding of two sums happens to favour. docs/own_data.md has
the numbers these were chosen from.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

#: A pair's own caption must outscore this share of the other captions for its image, on average.
MIN_OWN_AUC = 0.55
#: Two cosines closer than this are a tie (float32 sums of the same products differ by rounding, ~1e-7).
TIE_TOLERANCE = 1e-5
#: p(clean) strictly between these is "undecided".
UNDECIDED = (0.1, 0.9)


def _subset(n_images: int, max_images: int, seed: int) -> np.ndarray:
    if n_images <= max_images:
        return np.arange(n_images)
    return np.sort(np.random.default_rng(seed).choice(n_images, size=max_images, replace=False))


def retrieval_r1(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray, *,
                 max_images: int = 2000, max_candidates: int = 1000, seed: int = 0, chunk: int = 1024) -> Dict:
    """On a random subset of the images (all of them up to ``max_images``) and their captions, features
    L2-normalized: i2t and t2i R@1 (chance = 1 / images) and ``own_caption_auc``, each caption's cosine with
    its image against that image's cosines with ``max_candidates`` random captions of the subset."""
    caption_image = np.asarray(caption_image, dtype=np.int64)
    images = _subset(int(img_feats.shape[0]), max_images, seed)
    pos = np.full(int(img_feats.shape[0]), -1, dtype=np.int64)
    pos[images] = np.arange(len(images))
    caps = np.nonzero(pos[caption_image] >= 0)[0]
    owner = torch.as_tensor(pos[caption_image[caps]], device=img_feats.device)  # caption -> its image in the subset
    img = img_feats[torch.as_tensor(images, device=img_feats.device)].float()
    txt = txt_feats[torch.as_tensor(caps, device=txt_feats.device)].float()
    # every caption's cosine with its own image, by the same product as the candidates' (a matmul, one image's
    # row at a time against the captions), and scores closer than TIE_TOLERANCE are ties: two identical
    # captions score the same however the sums are rounded
    own = torch.cat([(img[owner[s:s + chunk]] @ txt[s:s + chunk].t()).diagonal() for s in range(0, len(caps), chunk)]) \
        if len(caps) else torch.zeros(0, device=img.device)
    cand = torch.as_tensor(_subset(len(caps), max_candidates, seed + 1), device=txt.device)
    i2t_hits = t2i_hits = 0
    below = compared = 0.0
    for s in range(0, len(images), chunk):  # images x captions, one chunk of images at a time
        best = (img[s:s + chunk] @ txt.t()).argmax(dim=1)
        i2t_hits += int((owner[best] == torch.arange(s, s + len(best), device=best.device)).sum())
    for s in range(0, len(caps), chunk):
        best = (txt[s:s + chunk] @ img.t()).argmax(dim=1)
        t2i_hits += int((best == owner[s:s + chunk]).sum())
        # the share of the candidate captions (the caption itself left out) its image scores below it
        sims = img[owner[s:s + chunk]] @ txt[cand].t()
        o = own[s:s + chunk, None]
        other = cand[None, :] != torch.arange(s, s + len(o), device=cand.device)[:, None]
        tie = (sims - o).abs() <= TIE_TOLERANCE
        below += float(((((sims < o) & ~tie) + 0.5 * tie) * other).sum())
        compared += float(other.sum())
    n_img, n_cap = len(images), len(caps)
    return {"images": n_img, "captions": n_cap, "chance": 1.0 / max(n_img, 1),
            "own_caption_auc": below / max(compared, 1.0), "candidates": int(len(cand)),
            "i2t_r1": i2t_hits / max(n_img, 1), "i2t_hits": i2t_hits,
            "t2i_r1": t2i_hits / max(n_cap, 1), "t2i_hits": t2i_hits}


def gmm_separation(p_clean: Optional[np.ndarray], gmm: Optional[Dict] = None) -> Dict:
    """How decided the GMM is: the fraction of pairs with p(clean) strictly inside :data:`UNDECIDED`, and (with
    its fit: ``means``, ``variances``) the gap between its components' means over the sum of their spreads."""
    out: Dict = {}
    if p_clean is not None and len(p_clean):
        p = np.asarray(p_clean, dtype=np.float64)
        out["undecided_fraction"] = float(((p > UNDECIDED[0]) & (p < UNDECIDED[1])).mean())
    if gmm and "means" in gmm and "variances" in gmm:
        m, v = np.asarray(gmm["means"], dtype=np.float64), np.asarray(gmm["variances"], dtype=np.float64)
        out["component_gap"] = float(abs(m[0] - m[1]) / max(np.sqrt(v[0]) + np.sqrt(v[1]), 1e-12))
    return out


def min_own_auc(n_captions: int) -> float:
    """The ``own_caption_auc`` a model must reach on ``n_captions`` captions to count as seeing."""
    return max(MIN_OWN_AUC, 0.5 + 3 * 0.289 / np.sqrt(max(n_captions, 1)))


def separability(img_feats: torch.Tensor, txt_feats: torch.Tensor, caption_image: np.ndarray,
                 p_clean: Optional[np.ndarray] = None, gmm: Optional[Dict] = None, *, max_images: int = 2000,
                 seed: int = 0, what: str = "your pairs") -> Dict:
    """Whether the model tells the pairs apart: the numbers (:func:`retrieval_r1`, :func:`gmm_separation`), the
    verdict ``can_see`` and a one-line ``message`` (a warning when it cannot see)."""
    r = retrieval_r1(img_feats, txt_feats, caption_image, max_images=max_images, seed=seed)
    out = {**r, **gmm_separation(p_clean, gmm)}
    out["min_own_caption_auc"] = min_own_auc(r["captions"])
    out["can_see"] = bool(r["captions"] > 1 and r["own_caption_auc"] >= out["min_own_caption_auc"])
    numbers = (f"own caption above {100 * r['own_caption_auc']:.0f}% of the others vs 50% at chance; i2t R@1 "
               f"{100 * r['i2t_r1']:.1f}% vs chance {100 * r['chance']:.1f}%, on {r['images']} images")
    if "undecided_fraction" in out:
        numbers += f"; {100 * out['undecided_fraction']:.0f}% of pairs with p(clean) between 0.1 and 0.9"
    if out["can_see"]:
        out["message"] = f"self-check: the model tells {what} apart ({numbers})"
    else:
        out["message"] = (f"warning: scores near chance: this model barely tells {what} apart ({numbers}); its "
                          f"p(clean), weights and cosines rank wrong pairs little better than at random. Use "
                          f"weights that know your kind of images: real CLIP weights (--pretrained openai, "
                          f"docs/own_data.md); the demo's base knows only the demo's drawn scenes")
    return out


def check_model(model, split, preprocess, tokenizer, *, device, autocast=None, batch_size: int = 256,
                num_workers: int = 0, what: str = "your pairs") -> Dict:
    """:func:`separability` of ``model`` on ``split``, its features encoded here (a run whose method builds no
    memory bank checks its initial model on the dev split this way). The global random state is left as it
    was: the encoding's data loader draws its seed from it, and the run's draws must not depend on the check."""
    from npc.evaluation import encode_split

    with torch.random.fork_rng(devices=[]):
        img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=batch_size, device=device,
                                autocast=autocast, num_workers=num_workers, progress=False, desc="self-check")
    return separability(img, txt, split.caption_image, what=what)
