"""Image-text retrieval metrics (Recall@K, median / mean rank, rsum), field-standard protocol.

Pure functions over a precomputed similarity matrix: no model code here. The matrix is
``sims[i, j]`` = similarity of image ``i`` and caption ``j`` with captions in consecutive runs of
``num_anns`` per image, so caption ``j`` belongs to image ``j // num_anns`` (the SCAN test layout).

The work is done in torch on the device the matrix already lives on (a numpy array is wrapped
without a copy and processed on the CPU), in row/column chunks so that a 5,000 x 25,000 matrix
never needs a full boolean copy of itself. Only the integer ranks (one per query) come back to
numpy for the statistics.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["METRIC_KEYS", "TIE_KEYS", "TIE_RULES", "retrieval_metrics", "fold_metrics",
           "format_metrics_table"]

#: Float keys of the dicts returned by :func:`retrieval_metrics` and :func:`fold_metrics`.
METRIC_KEYS = (
    "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
    "i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr", "rsum",
)
#: Integer keys that follow them: queries whose ground truth ties with a wrong candidate.
TIE_KEYS = ("i2t_ties", "t2i_ties")
#: How a wrong candidate scoring exactly the ground truth's score is ranked (``ties=``).
TIE_RULES = ("pessimistic", "optimistic")
_RECALL_KS = (1, 5, 10)

# Elements of the similarity matrix compared at once (a boolean chunk of this many elements is
# materialized). 2**24 keeps the temporary at 16 MiB and is still large enough to be fast.
_CHUNK_ELEMENTS = 1 << 24


def _as_tensor(sims) -> torch.Tensor:
    """Wrap ``sims`` as a float tensor on its own device without copying when possible."""
    if isinstance(sims, torch.Tensor):
        t = sims.detach()
    else:
        arr = np.asarray(sims)
        try:
            t = torch.as_tensor(arr)
        except ValueError:  # negative strides (e.g. a reversed view) cannot be wrapped
            t = torch.as_tensor(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"sims must hold real numbers, got dtype {t.dtype}")
    # Half / bfloat16 comparisons are slow or unsupported on CPU; upcasting to float32 is exact,
    # so the order of scores and their ties are unchanged. Integers go to float64 (exact).
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    elif not t.is_floating_point():
        t = t.to(torch.float64)
    return t


def _check_shape(t: torch.Tensor, num_anns: int) -> None:
    if isinstance(num_anns, bool) or not isinstance(num_anns, (int, np.integer)) or num_anns < 1:
        raise ValueError(f"num_anns must be a positive integer, got {num_anns!r}")
    if t.dim() != 2:
        raise ValueError(f"sims must be a 2-D (n_images, n_images*num_anns) matrix, "
                         f"got shape {tuple(t.shape)}")
    n_img, n_txt = t.shape
    if n_img == 0:
        raise ValueError("sims has no images (shape (0, ...)): nothing to evaluate")
    if n_txt != n_img * num_anns:
        raise ValueError(
            f"sims has shape {tuple(t.shape)} but with num_anns={num_anns} the caption axis must "
            f"have n_images*num_anns = {n_img}*{num_anns} = {n_img * num_anns} columns, "
            f"i.e. expected shape ({n_img}, {n_img * num_anns})")


def _i2t_ranks(t: torch.Tensor, num_anns: int) -> Tuple[np.ndarray, np.ndarray]:
    """1-based ranks of each image's best ground-truth caption when ties count against the query
    (pessimistic) and for it (optimistic); they differ exactly for the tied queries."""
    n_img, n_txt = t.shape
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_txt)
    out = []
    for start in range(0, n_img, rows_per_chunk):
        block = t[start:start + rows_per_chunk]                      # (c, n_txt)
        c = block.shape[0]
        # Image start+r owns columns (start+r)*num_anns ... (start+r)*num_anns + num_anns-1.
        first = (torch.arange(start, start + c, device=t.device) * num_anns).unsqueeze(1)
        own = block.gather(1, first + torch.arange(num_anns, device=t.device))  # (c, num_anns)
        best = own.max(dim=1, keepdim=True).values                   # (c, 1)
        n_ge_all = (block >= best).sum(dim=1)
        n_gt_all = (block > best).sum(dim=1)  # no ground truth scores above the best one
        n_ge_own = (own >= best).sum(dim=1)   # >= 1: the best caption itself (plus tied GTs)
        # Pessimistic: every wrong caption scoring >= the best correct one is ranked ahead of it.
        # Optimistic: only those scoring strictly more.
        out.append(torch.stack([1 + n_ge_all - n_ge_own, 1 + n_gt_all]).cpu())
    both = torch.cat(out, dim=1).numpy().astype(np.int64)
    return both[0], both[1]


def _t2i_ranks(t: torch.Tensor, num_anns: int) -> Tuple[np.ndarray, np.ndarray]:
    """1-based pessimistic and optimistic ranks of each caption's single correct image."""
    n_img, n_txt = t.shape
    cols_per_chunk = max(1, _CHUNK_ELEMENTS // n_img)
    out = []
    for start in range(0, n_txt, cols_per_chunk):
        block = t[:, start:start + cols_per_chunk]                   # (n_img, c)
        cols = torch.arange(start, start + block.shape[1], device=t.device)
        gt = block[cols // num_anns, cols - start].unsqueeze(0)      # (1, c)
        # The correct image is counted once by ">=" (itself); every other count is a wrong image
        # scoring at least as high, so the count is exactly the pessimistic 1-based rank.
        out.append(torch.stack([(block >= gt).sum(dim=0), 1 + (block > gt).sum(dim=0)]).cpu())
    both = torch.cat(out, dim=1).numpy().astype(np.int64)
    return both[0], both[1]


def _image_of(caption_image, n_img: int, device) -> torch.Tensor:
    """``caption_image`` as a long tensor on ``device``, checked: every image has at least one caption."""
    ci = torch.as_tensor(np.asarray(caption_image, dtype=np.int64), device=device)
    if ci.dim() != 1:
        raise ValueError(f"caption_image must be 1-D (one image index per caption), got shape {tuple(ci.shape)}")
    if len(ci) and (int(ci.min()) < 0 or int(ci.max()) >= n_img):
        raise ValueError(f"caption_image holds image indices outside [0, {n_img})")
    if len(torch.unique(ci)) != n_img:
        raise ValueError(f"caption_image leaves some of the {n_img} images without a caption")
    return ci


def _i2t_ranks_any(t: torch.Tensor, ci: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_i2t_ranks` for any number of captions per image: caption ``j`` belongs to image ``ci[j]``."""
    n_img, n_txt = t.shape
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_txt)
    out = []
    for start in range(0, n_img, rows_per_chunk):
        block = t[start:start + rows_per_chunk]                      # (c, n_txt)
        own_mask = ci.unsqueeze(0) == torch.arange(start, start + block.shape[0], device=t.device).unsqueeze(1)
        best = torch.where(own_mask, block, torch.full_like(block, -torch.inf)).max(dim=1, keepdim=True).values
        n_ge_all = (block >= best).sum(dim=1)
        n_gt_all = (block > best).sum(dim=1)
        n_ge_own = ((block >= best) & own_mask).sum(dim=1)
        out.append(torch.stack([1 + n_ge_all - n_ge_own, 1 + n_gt_all]).cpu())
    both = torch.cat(out, dim=1).numpy().astype(np.int64)
    return both[0], both[1]


def _t2i_ranks_any(t: torch.Tensor, ci: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_t2i_ranks` for any number of captions per image: caption ``j``'s image is ``ci[j]``."""
    n_img, n_txt = t.shape
    cols_per_chunk = max(1, _CHUNK_ELEMENTS // n_img)
    out = []
    for start in range(0, n_txt, cols_per_chunk):
        block = t[:, start:start + cols_per_chunk]
        cols = torch.arange(start, start + block.shape[1], device=t.device)
        gt = block[ci[cols], cols - start].unsqueeze(0)
        out.append(torch.stack([(block >= gt).sum(dim=0), 1 + (block > gt).sum(dim=0)]).cpu())
    both = torch.cat(out, dim=1).numpy().astype(np.int64)
    return both[0], both[1]


def _stats(ranks: np.ndarray, prefix: str) -> Dict[str, float]:
    d = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks <= k)) for k in _RECALL_KS}
    d[f"{prefix}_medr"] = float(np.median(ranks))
    d[f"{prefix}_meanr"] = float(np.mean(ranks))
    return d


def _check_ties(ties: str) -> None:
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")


def retrieval_metrics(sims, num_anns: Optional[int] = None, ties: str = "pessimistic", *,
                      caption_image=None) -> Dict[str, Union[float, int]]:
    """Recall@{1,5,10}, median and mean rank in both directions, rsum, and the number of ties.

    Args:
        sims: (n_images, n_images * num_anns) similarity matrix, a torch tensor (any device) or
            anything numpy can read. Caption ``j`` belongs to image ``j // num_anns``.
        num_anns: captions per image (5 for MSCOCO / Flickr30K, 1 for CC120K).
        ties: ``"pessimistic"`` (default) or ``"optimistic"``, the rule for exact ties (below).
        caption_image: instead of ``num_anns``, the image index of every caption (a split's
            ``Split.caption_image``): any number of captions per image, in any order (a CSV dataset).
            With ``k`` consecutive captions per image the result is the one ``num_anns=k`` gives.

    Returns:
        dict with keys ``i2t_r1 i2t_r5 i2t_r10 t2i_r1 t2i_r5 t2i_r10 i2t_medr i2t_meanr t2i_medr
        t2i_meanr rsum`` (:data:`METRIC_KEYS`) as Python floats, then ``i2t_ties t2i_ties``
        (:data:`TIE_KEYS`) as Python ints. Recalls are percentages; ``rsum`` is the sum of the six
        recalls (max 600). Ranks are 1-based; medr is ``np.median`` of the ranks (may be x.5),
        meanr their mean. ``<dir>_ties`` is the number of queries whose best ground-truth score is
        exactly equal to the score of at least one wrong candidate: only these queries can rank
        differently under the two tie rules, so when both counts are 0 the two rules give the same
        table.

    Ranking rules:
        * image -> text: a query's rank is the rank of its BEST ground-truth caption (any of its
          ``num_anns`` captions); the other ground-truth captions are not competitors.
        * text -> image: each caption has exactly one correct image.
        * ``ties="pessimistic"``: rank = 1 + number of WRONG candidates with score >= the best
          correct score, i.e. a wrong candidate tied with the correct one is ranked before it.
          A degenerate model (e.g. all-equal scores) then scores ~0 instead of a perfect recall,
          and the result does not depend on the order a sort happens to leave equal scores in.
        * ``ties="optimistic"``: rank = 1 + number of wrong candidates with score > the best
          correct score: tied wrong candidates are ranked after it. Together the two rules bound
          what any sort-based evaluation (e.g. the reference release's ``argsort``) can report.

    Raises:
        ValueError: if ``sims`` is not 2-D, ``sims.shape[1] != sims.shape[0] * num_anns``, it is
            empty, it contains NaN (a NaN compares false with everything and would silently
            give the query rank 1), or ``ties`` is not a known rule.
    """
    _check_ties(ties)
    t = _as_tensor(sims)
    if caption_image is None:
        _check_shape(t, num_anns)
        rankers = (("i2t", partial(_i2t_ranks, num_anns=num_anns)), ("t2i", partial(_t2i_ranks, num_anns=num_anns)))
    else:
        if t.dim() != 2 or t.shape[0] == 0 or t.shape[1] != len(caption_image):
            raise ValueError(f"sims has shape {tuple(t.shape)}: expected (n_images, {len(caption_image)}) for "
                             f"{len(caption_image)} captions")
        ci = _image_of(caption_image, t.shape[0], t.device)
        rankers = (("i2t", partial(_i2t_ranks_any, ci=ci)), ("t2i", partial(_t2i_ranks_any, ci=ci)))
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError("sims contains NaN; refusing to compute ranks from it")
    out = {}
    for prefix, ranks_of in rankers:
        pessimistic, optimistic = ranks_of(t)
        out.update(_stats(pessimistic if ties == "pessimistic" else optimistic, prefix))
        out[f"{prefix}_ties"] = int(np.count_nonzero(pessimistic != optimistic))
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in _RECALL_KS))
    return {k: out[k] for k in METRIC_KEYS + TIE_KEYS}


def fold_metrics(sims, num_anns: int, folds: int = 5, ties: str = "pessimistic"
                 ) -> Dict[str, Union[float, int]]:
    """MSCOCO 1K protocol: mean of :func:`retrieval_metrics` over ``folds`` diagonal blocks.

    The images are split into ``folds`` consecutive blocks of ``n_images / folds`` images; fold
    ``f`` is evaluated on its own images against its own captions only (the diagonal block
    ``sims[f*m:(f+1)*m, f*m*num_anns:(f+1)*m*num_anns]`` with ``m = n_images / folds``). Every key of
    :data:`METRIC_KEYS` is the mean over folds; ``rsum`` is the mean of the fold rsums (equal to the
    sum of the mean recalls), and medr / meanr are means of the per-fold values. The tie counts
    (:data:`TIE_KEYS`) are summed over the folds: every query belongs to exactly one fold. ``ties``
    is the rule of :func:`retrieval_metrics`.

    All six recalls are the real ones. The reference release's COCO-1K output repeats i2t R@10 in
    the t2i R@10 slot, so an rsum computed from its published 1K table is inflated; that slip is
    deliberately NOT reproduced, so COCO-1K t2i R@10 / rsum here are not comparable with it.

    Raises:
        ValueError: for a bad shape (see :func:`retrieval_metrics`), ``folds < 1``, or when
            ``n_images`` is not divisible by ``folds``.
    """
    _check_ties(ties)
    t = _as_tensor(sims)
    _check_shape(t, num_anns)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    n_img = t.shape[0]
    if n_img % folds:
        raise ValueError(f"cannot split {n_img} images into {folds} equal folds "
                         f"(sims shape {tuple(t.shape)})")
    m = n_img // folds
    per_fold = [retrieval_metrics(t[f * m:(f + 1) * m, f * m * num_anns:(f + 1) * m * num_anns],
                                  num_anns, ties)
                for f in range(folds)]
    out = {k: float(np.mean([r[k] for r in per_fold])) for k in METRIC_KEYS}
    out.update({k: int(sum(r[k] for r in per_fold)) for k in TIE_KEYS})
    return out


def format_metrics_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """Fixed-width text table: one line per named result, recalls and rsum with one decimal.

    ``rows`` maps a label (e.g. ``"test 5K"``, ``"test 1K (5-fold)"``) to a dict as returned by
    :func:`retrieval_metrics`. Columns: i2t R@1 R@5 R@10 | t2i R@1 R@5 R@10 | rsum | ties, the
    last one the tie counts ``i2t/t2i`` (``-`` for a row without them): when both are 0 the
    pessimistic and optimistic tie rules give the same row.
    """
    recall_cols = [f"{d}_r{k}" for d in ("i2t", "t2i") for k in _RECALL_KS]
    tie_cells = {name: "/".join(str(int(m[k])) for k in TIE_KEYS) if all(k in m for k in TIE_KEYS) else "-"
                 for name, m in rows.items()}
    name_w = max([len("result")] + [len(str(name)) for name in rows])
    w = 6  # fits "100.0" and "R@10" with a space
    rsum_w = 7  # fits "600.0"
    tie_w = max([len(" i2t/t2i")] + [len(c) + 1 for c in tie_cells.values()])

    def line(name, cells, rsum, tie):
        return (f"{name:<{name_w}} |" + "".join(f"{c:>{w}}" for c in cells[:3]) + " |"
                + "".join(f"{c:>{w}}" for c in cells[3:]) + f" |{rsum:>{rsum_w}} |{tie:>{tie_w}}")

    group = f"{'':<{name_w}} |{'i2t':^{3 * w}} |{'t2i':^{3 * w}} |{'':>{rsum_w}} |{'ties':^{tie_w}}"
    header = line("result", ["R@1", "R@5", "R@10"] * 2, "rsum", "i2t/t2i")
    lines = [group.rstrip(), header, "-" * len(header)]
    for name, m in rows.items():
        lines.append(line(str(name), [f"{float(m[c]):.1f}" for c in recall_cols],
                          f"{float(m['rsum']):.1f}", tie_cells[name]))
    return "\n".join(lines)
