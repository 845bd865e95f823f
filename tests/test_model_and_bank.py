"""Model loading (this project's and the release's checkpoints, offline tags) and bank file I/O."""
import time

import numpy as np
import pytest
import torch

from npc import memory_bank as mb
from npc.model import (WeightsUnavailable, create_model, encode, encode_text_parts, load_checkpoint_weights,
                       open_clip_name)


def test_reference_names_map_to_open_clip():
    assert open_clip_name("ViT-B/32") == "ViT-B-32-quickgelu"
    assert open_clip_name("npc-tiny") == "npc-tiny"
    with pytest.raises(ValueError, match="unknown --vision_model 'ViT-Q/99'"):
        open_clip_name("ViT-Q/99")


def test_release_checkpoint_gives_identical_similarities(tmp_path):
    torch.manual_seed(0)
    src, _, _ = create_model("npc-micro", "none")
    with torch.no_grad():  # the release stores fp16: round the source so the file is lossless
        for p in src.parameters():
            p.copy_(p.half().float())
    sd = {f"module.{k}": v.half() for k, v in src.state_dict().items()}
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(24), vocab_size=torch.tensor(49408))
    path = tmp_path / "release_ckpt.pth.tar"
    torch.save({"epoch": 4, "name": "ViT-B/32", "state_dict": sd, "optimizer": {}}, path)

    torch.manual_seed(1)
    dst, _, _ = create_model("npc-micro", "none")
    load_checkpoint_weights(dst, path)
    images = torch.randn(4, 3, 32, 32)
    texts = torch.randint(1, 1000, (6, 24))
    src.eval(), dst.eval()
    with torch.no_grad():
        a_img, a_txt = encode(src, images, texts)
        b_img, b_txt = encode(dst, images, texts)
    assert torch.equal(a_img @ a_txt.t(), b_img @ b_txt.t())


@pytest.mark.parametrize("causal", [True, False])
def test_text_parts_match_open_clip(causal):
    # Parts run only up to their longest caption when the tower is causal (here 5 and 11 of 24
    # positions); features and gradients are open_clip's. Without the causal mask padding is
    # attended to, and every position is kept.
    torch.manual_seed(0)
    model, _, tokenizer = create_model("npc-micro", "none")
    if not causal:
        model.attn_mask = None
    texts = tokenizer(["a red circle", "two blue squares on the left of a big star", "x", "a green one"])
    parts = [torch.tensor([2, 0]), torch.tensor([3, 1])]
    got = encode_text_parts(model, texts, parts)
    ref = torch.nn.functional.normalize(model.encode_text(texts), dim=-1)
    assert [g.shape for g in got] == [(2, ref.shape[1])] * 2
    torch.testing.assert_close(torch.cat(got), ref[torch.cat(parts)], rtol=0, atol=1e-6)
    probe = torch.randn(4, ref.shape[1])
    params = [p for p in model.parameters() if p.requires_grad]
    g_got = torch.autograd.grad((torch.cat(got) * probe).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((ref[torch.cat(parts)] * probe).sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_got, g_ref):  # equal up to float summation order
        a = torch.zeros_like(p) if a is None else a
        b = torch.zeros_like(p) if b is None else b
        assert (a - b).abs().max() <= 1e-5 * b.abs().max().clamp_min(1e-3), p.shape


def test_checkpoint_for_another_architecture_is_a_clear_error(tmp_path):
    tiny, _, _ = create_model("npc-tiny", "none")
    torch.save({"state_dict": tiny.state_dict()}, tmp_path / "t.pt")
    micro, _, _ = create_model("npc-micro", "none")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_checkpoint_weights(micro, tmp_path / "t.pt")


def test_missing_openai_weights_fail_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable, match="--pretrained PATH"):
        create_model("ViT-B/32", "openai")
    assert time.perf_counter() - t0 < 10  # no retry storm; generous bound for a loaded CI machine


def _split_stub(n_images, num_anns=5):
    class S:
        image_ids = [str(1000 + i) for i in range(n_images)]
        num_images = n_images

        def __len__(self):
            return n_images * num_anns
    return S()


def test_release_pickled_bank_loads_through_restricted_loader(tmp_path):
    split = _split_stub(3)
    img = {str(1000 + i): np.array([5 * i + 1]) for i in range(3)}
    txt = {str(i): np.array([14 - i]) for i in range(15)}
    np.save(tmp_path / "0.2_mbank_img_idx.npy", img, allow_pickle=True)
    np.save(tmp_path / "0.2_mbank_txt_idx.npy", txt, allow_pickle=True)
    bank = mb.load_bank(tmp_path, 0.2, split)
    assert bank.image_bank.tolist() == [1, 6, 11]
    assert bank.text_bank.tolist() == list(range(14, -1, -1))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    split = _split_stub(1)
    np.save(tmp_path / "0.2_mbank_img_idx.npy", {"1000": _Evil()}, allow_pickle=True)
    np.save(tmp_path / "0.2_mbank_txt_idx.npy", np.zeros(5, dtype=np.int64))
    with pytest.raises(mb.BankFileError, match="refusing to load builtins.print.*--trust_pickle"):
        mb.load_bank(tmp_path, 0.2, split)


def test_bank_shape_mismatch_names_the_file(tmp_path):
    split = _split_stub(2)
    np.save(tmp_path / "0.2_mbank_img_idx.npy", np.zeros(3, dtype=np.int64))
    np.save(tmp_path / "0.2_mbank_txt_idx.npy", np.zeros(10, dtype=np.int64))
    with pytest.raises(mb.BankFileError, match="0.2_mbank_img_idx.npy: shape"):
        mb.load_bank(tmp_path, 0.2, split)


def test_bank_picks_nearest_clean_neighbours():
    # 3 images x 2 captions in 2-D; caption 3 (image 1) is "noisy" (p_clean low).
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    txt = torch.nn.functional.normalize(torch.tensor([[1, 0], [1, .1], [.8, .2], [0, 1], [0, 1], [.1, 1.]]), dim=1)
    caption_image = np.repeat(np.arange(3), 2)
    p_clean = np.array([0.95, 0.99, 0.97, 0.1, 0.93, 0.92])
    bank = mb.build_bank_index(img, txt, caption_image, p_clean, 0.9)
    # image side: nearest image with a clean caption (itself, no self-exclusion), then its most certain caption
    assert bank.image_bank.tolist() == [1, 2, 4]
    # text side: nearest clean caption; noisy caption 3 is never an entry, its neighbour 4 is
    assert bank.text_bank.tolist() == [0, 1, 2, 4, 4, 5]


def test_gmm_separates_two_loss_modes():
    rng = np.random.default_rng(0)
    losses = np.concatenate([rng.normal(1.0, 0.2, 300), rng.normal(4.0, 0.3, 100)])
    p = mb.clean_probability(losses)
    assert (p[:300] > 0.9).mean() > 0.95 and (p[300:] < 0.1).mean() > 0.95


def test_the_banks_nearest_neighbour_search_is_the_same_in_any_chunking():
    from npc.memory_bank import nearest

    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    k = torch.nn.functional.normalize(torch.randn(700, 16, generator=g), dim=1)
    whole = (q @ k.t()).argmax(dim=1)
    for chunk, max_scores in ((4096, 1 << 28), (7, 1 << 28), (4096, 700 * 3), (4096, 1)):
        assert torch.equal(nearest(q, k, chunk=chunk, max_scores=max_scores), whole)


def test_release_recipe_encodes_the_features_as_the_towers_output_them():
    # --bank_recipe release: encode (the bank's encoding) through Unnormalized gives open_clip's unnormalized
    # features, whose directions are the normalized features the default encodes.
    torch.manual_seed(0)
    model = create_model("npc-micro", "none")[0].eval()
    images, texts = torch.randn(3, 3, 32, 32), torch.randint(1, 1000, (4, 24))
    with torch.no_grad():
        raw_img, raw_txt = encode(mb.Unnormalized(model), images, texts)
        img, txt = encode(model, images, texts)
        assert torch.equal(raw_img, model.encode_image(images, normalize=False))
        assert torch.equal(raw_txt, model.encode_text(texts, normalize=False))
    assert not torch.allclose(raw_img.norm(dim=1), torch.ones(3))
    assert torch.allclose(mb.normalized(raw_img), img, atol=1e-6)
    assert torch.allclose(mb.normalized(raw_txt), txt, atol=1e-6)


def test_the_recipe_is_recorded_only_when_not_the_default_and_a_bank_of_the_other_is_refused():
    from npc.bank_provenance import bank_differences

    built = {"vision_model": "m", "pretrained": "p", "weights": None, "clean_threshold": 0.9,
             "bank_batch_size": 128, "bank_seed": 99, "initial_weights": "x"}   # an info file of the default recipe
    assert bank_differences(built, dict(built)) == []
    assert bank_differences(built, {**built, "bank_recipe": "project"}) == []
    assert bank_differences(built, {**built, "bank_recipe": "release"}) == ["--bank_recipe release (the bank has project)"]
    assert bank_differences({**built, "bank_recipe": "release"}, built) == ["--bank_recipe project (the bank has release)"]
