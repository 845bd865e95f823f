"""The memory bank's arithmetic pinned by numbers written out here, not by the bank's own code.

Eight pairs of six images (two captions of image 0, two of image 5), hand-written unit features in the
plane (angles in degrees), logit scale 3, two batches of four consecutive pairs. The literals were
derived with numpy apart from the package: the per-pair symmetric InfoNCE within each batch, the min-max
scaling, the 2-component GMM's EM written out (initialized from the 2-means split of the scaled losses,
reg_covar 5e-4, stopped when the mean log-likelihood changes by less than 1e-2, as scikit-learn runs it:
it agrees with it to 1e-15), the clean set p > 0.9, and the neighbours by cosine (an image's entry: the
clean caption the GMM is most sure about of the most similar image with a clean caption).

Each of these one-line mutants of npc/bank_math.py was applied, this file run and seen to fail, then
reverted:

* the logit scale dropped from the per-pair loss pass (``clip_loss_per_sample(..., torch.tensor(1.0))`` in
  ``per_sample_losses``): three tests fail, on the losses (and the whole bank: no pair is clean);
* the min-max scaling before the GMM skipped (``x = np.asarray(losses, dtype=np.float64)`` in ``fit_loss_gmm``):
  two fail, on the scaled losses, the fit and p(clean);
* the whole split as negatives instead of batches of consecutive pairs (``range(0, n, batch_size := n)`` in
  ``per_sample_losses``): three fail, on the losses and p(clean).

The release's recipe (``--bank_recipe release``) is pinned too: raw losses into the GMM, and neighbours by
the dot product of a normalized query with the clean pairs' unnormalized features.
"""
import numpy as np
import pytest
import torch

from npc import bank_math

IMAGE_DEG = [0, 40, 90, 150, 200, 260]
CAPTION_DEG = [24, 255, 15, 112, 136, 141, 240, 284]
CAPTION_IMAGE = np.array([0, 0, 1, 2, 3, 4, 5, 5])
SCALE, BATCH = 3.0, 4

LOSSES = [1.0067685157976427, 2.5752556115311456, 1.0588949739762945, 0.23910535247333176,
          0.475161016513993, 1.5457455247846283, 0.8217835483934157, 0.7431351485068691]
SCALED = [0.32860179277762513, 1.0, 0.35091476600207633, 0.0,
          0.10104472652194221, 0.5593134119884369, 0.2494181158343309, 0.21575230192462713]
P_CLEAN = [9.5214628532064527e-01, 4.4705770873548785e-06, 9.3815445942382847e-01, 9.9391171222881292e-01,
           9.9203802471092573e-01, 3.5368362459379582e-01, 9.7857550691913409e-01, 9.8389798880224388e-01]
# the GMM's fit on the scaled losses: weights, means, variances (reg_covar included), clean first
FIT = {"weights": [0.7672177373691915, 0.23278226263080914], "means": [0.22260819836261936, 0.7725746759269041],
       "variances": [0.02087039152688911, 0.06612510374736259]}
CLEAN = [0, 2, 3, 4, 6, 7]
TEXT_BANK = [0, 6, 2, 3, 4, 4, 6, 7]     # caption -> clean pair of the most similar clean caption
IMAGE_BANK = [0, 2, 3, 4, 4, 7]          # image 5's clean captions 6 and 7: 7 has the higher p(clean)


def _unit(deg):
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], axis=1))


class _Split:
    caption_image = CAPTION_IMAGE
    num_images = len(IMAGE_DEG)

    def __len__(self):
        return len(CAPTION_DEG)


def test_per_pair_losses_within_batches_of_consecutive_pairs():
    losses = bank_math.per_sample_losses(_unit(IMAGE_DEG), _unit(CAPTION_DEG), CAPTION_IMAGE, SCALE, BATCH)
    np.testing.assert_allclose(losses, LOSSES, rtol=0, atol=1e-6)  # the loss pass computes in fp32


def test_gmm_on_min_max_scaled_losses():
    x, gmm, clean = bank_math.fit_loss_gmm(np.array(LOSSES), seed=99)
    np.testing.assert_allclose(x, SCALED, rtol=0, atol=1e-15)
    order = [clean, 1 - clean]
    np.testing.assert_allclose(gmm.weights_[order], FIT["weights"], rtol=1e-9)
    np.testing.assert_allclose(gmm.means_.ravel()[order], FIT["means"], rtol=1e-9)
    np.testing.assert_allclose(gmm.covariances_.ravel()[order], FIT["variances"], rtol=1e-9)
    p, fit = bank_math.clean_probability_and_fit(np.array(LOSSES), seed=99)
    np.testing.assert_allclose(p, P_CLEAN, rtol=1e-9, atol=1e-15)
    assert fit["converged"]


def test_clean_set_and_neighbours():
    bank = bank_math.build_bank_index(_unit(IMAGE_DEG), _unit(CAPTION_DEG), CAPTION_IMAGE, np.array(P_CLEAN), 0.9)
    assert bank_math.clean_set(np.array(P_CLEAN), 0.9).tolist() == CLEAN
    assert bank.text_bank.tolist() == TEXT_BANK
    assert bank.image_bank.tolist() == IMAGE_BANK


def test_the_whole_bank_from_features():
    bank, info, p = bank_math.build_memory_bank(_unit(IMAGE_DEG), _unit(CAPTION_DEG), _Split(), SCALE,
                                                batch_size=BATCH, clean_threshold=0.9, seed=99,
                                                noise_mask=np.array([0, 1, 0, 0, 0, 1, 0, 0], dtype=bool))
    np.testing.assert_allclose(p, P_CLEAN, rtol=0, atol=1e-5)  # from fp32 losses
    assert (bank.text_bank.tolist(), bank.image_bank.tolist()) == (TEXT_BANK, IMAGE_BANK)
    assert (info["n_clean"], info["precision"], info["recall"]) == (6, 1.0, 1.0)


# ----------------------------------------------------------------------------- the release's recipe
# The same directions with norms as a model outputs them; the losses do not change (they normalize).
IMAGE_NORM = [1.0, 2.0, 1.0, 3.0, 1.0, 1.0]
CAPTION_NORM = [1.0, 1.0, 4.0, 1.0, 1.0, 1.0, 1.0, 0.5]
# The GMM on the raw losses (numpy, as above): p(clean) of pair 5 0.320 instead of 0.354; the clean set is the same.
P_CLEAN_RAW = [9.505797840597936e-01, 2.329494516386709e-06, 9.357308424495441e-01, 9.936979491690360e-01,
               9.919328322766565e-01, 3.196773200224531e-01, 9.782409984752017e-01, 9.837119100964291e-01]
# Caption q's entry: the clean pair j of the largest cos(q, t_j) * |t_j|; image i's: of the largest
# cos(x_i, x_ci(j)) * |x_ci(j)| over the clean pairs j (one key per clean pair).
TEXT_BANK_RELEASE = [2, 6, 2, 3, 4, 4, 6, 6]   # caption 2 (norm 4) draws captions 0 and 7; 7 (norm 0.5) loses itself
# Image 1 (norm 2, pair 2) draws image 0; image 3 (norm 3, pair 4) draws images 2 and 4. Image 5's own keys,
# pairs 6 and 7, are the same features: a tie, which torch.topk breaks as it does (as in the release).
IMAGE_BANK_RELEASE = [2, 2, 4, 4, 4]


def test_release_recipe():
    img = _unit(IMAGE_DEG) * torch.tensor(IMAGE_NORM)[:, None]
    txt = _unit(CAPTION_DEG) * torch.tensor(CAPTION_NORM)[:, None]
    bank, info, p = bank_math.build_memory_bank(img, txt, _Split(), SCALE, batch_size=BATCH, clean_threshold=0.9,
                                                seed=99, recipe="release")
    np.testing.assert_allclose(p, P_CLEAN_RAW, rtol=0, atol=1e-5)
    assert bank.text_bank.tolist() == TEXT_BANK_RELEASE
    assert bank.image_bank[:5].tolist() == IMAGE_BANK_RELEASE and bank.image_bank[5] in (6, 7)


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="recipe"):
        bank_math.build_memory_bank(_unit(IMAGE_DEG), _unit(CAPTION_DEG), _Split(), SCALE, batch_size=BATCH,
                                    recipe="other")
