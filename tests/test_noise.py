"""Noise construction: byte-identity with the spec algorithm, file naming, caching, CLI."""
import hashlib
import importlib.util
import inspect
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from npc.noise import (NoisySplitError, caption_shuffle, ensure_noisy_split, find_noisy_caps, noise_info_path,
                       image_shuffle, noise_mask, noise_mask_path, noisy_caps_path, ratio_tag,
                       read_caption_lines)

ROOT = Path(__file__).resolve().parents[1]


def load_cli():
    spec = importlib.util.spec_from_file_location("construct_noise", ROOT / "construct_noise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_captions(n):
    """Unique captions with some awkward content (non-ASCII, inner/trailing spaces)."""
    extras = ["café crème on a table", "a  dog   runs ", "  leading spaces", "ünïcödé 日本語"]
    return [f"caption {i}: {extras[i % len(extras)]}" for i in range(n)]


def make_ann_dir(tmp_path, captions):
    ann = tmp_path / "annotations" / "scan_split"
    ann.mkdir(parents=True)
    (ann / "train_caps.txt").write_bytes("".join(c + "\n" for c in captions).encode("utf-8"))
    return ann


def spec_noise_bytes(captions, ratio, seed):
    """Independent, literal re-statement of spec section 2 (numpy's legacy generator seeded
    with ``seed``, which is what ``np.random.seed(seed)`` does to the global one)."""
    rs = np.random.RandomState(seed)
    n = len(captions)
    idx = np.arange(n)
    rs.shuffle(idx)
    k = int(ratio * n)
    picked = np.array([captions[i] for i in idx[:k]])
    rs.shuffle(picked)
    out = list(captions)
    for pos, cap in zip(idx[:k], picked):
        out[pos] = str(cap)
    return "".join(c + "\n" for c in out).encode("utf-8")


def quiet(_msg):
    pass


# ------------------------------------------------------------------ byte identity
@pytest.mark.parametrize("n,ratio,seed", [(50, 0.2, 99), (101, 0.5, 0), (1000, 0.6, 12345),
                                          (100, 0.29, 7), (10, 0.4, 99), (3, 0.5, 1)])
def test_caption_noise_file_byte_identical_to_spec(tmp_path, n, ratio, seed):
    caps = make_captions(n)
    ann = make_ann_dir(tmp_path, caps)
    path, mask = ensure_noisy_split(ann, ratio, seed=seed, log=quiet)
    assert path == ann / f"{ratio}_noise_train_caps.txt"
    expected = tmp_path / "expected.txt"
    expected.write_bytes(spec_noise_bytes(caps, ratio, seed))
    assert path.read_bytes() == expected.read_bytes()


def test_caption_shuffle_draws_exactly_as_spec(monkeypatch):
    # Exactly two shuffles of the global generator: all N indices, then int(r*N) captions.
    # 0.29 * 100 = 28.999999999999996, so int() gives 28 positions, as in the release.
    calls = []
    real = np.random.shuffle

    def spy(x):
        calls.append(len(x))
        real(x)

    monkeypatch.setattr(np.random, "shuffle", spy)
    caption_shuffle(make_captions(100), 0.29)
    assert calls == [100, 28]


@pytest.mark.parametrize("n,ratio,seed", [(200, 0.2, 99), (500, 0.5, 3), (1000, 0.6, 42)])
def test_noise_fraction_and_mask(n, ratio, seed):
    caps = make_captions(n)
    noisy = caption_shuffle(caps, ratio, seed=seed)
    k = int(ratio * n)
    mask = noise_mask(caps, noisy)
    # The k touched positions are those that changed plus shuffled captions that landed home
    # (a random permutation has ~1 fixed point), so the count is at most k and close to it.
    assert k - 5 <= mask.sum() <= k
    assert sorted(noisy) == sorted(caps)       # a permutation: nothing lost or duplicated
    assert mask.tolist() == [a != b for a, b in zip(caps, noisy)]


def test_default_seed_is_99(tmp_path):
    assert inspect.signature(caption_shuffle).parameters["seed"].default == 99
    assert inspect.signature(ensure_noisy_split).parameters["seed"].default == 99
    caps = make_captions(80)
    assert caption_shuffle(caps, 0.4) == caption_shuffle(caps, 0.4, seed=99)
    assert caption_shuffle(caps, 0.4) != caption_shuffle(caps, 0.4, seed=98)
    ann = make_ann_dir(tmp_path, caps)
    path, _ = ensure_noisy_split(ann, 0.4, log=quiet)
    assert path.read_bytes() == spec_noise_bytes(caps, 0.4, 99)


def test_global_rng_state_untouched():
    np.random.seed(123)
    before = np.random.get_state()
    caption_shuffle(make_captions(50), 0.5, seed=99)
    image_shuffle(make_captions(50), 5, 0.5, seed=99)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]
    np.random.seed(123)
    assert np.random.rand() == np.random.RandomState(123).rand()


# ------------------------------------------------------------------ image mode
def test_image_mode_whole_blocks_and_distinct_name(tmp_path):
    n_img, a, ratio = 20, 5, 0.3
    caps = make_captions(n_img * a)
    ann = make_ann_dir(tmp_path, caps)
    path, mask = ensure_noisy_split(ann, ratio, mode="image", num_anns=a, log=quiet)
    assert path.name == "0.3_imgnoise_train_caps.txt"
    assert not (ann / "0.3_noise_train_caps.txt").exists()
    assert noise_mask_path(path).name == "0.3_imgnoise_train_caps_mask.npy"
    per_image = mask.reshape(n_img, a)
    assert np.all(per_image.all(axis=1) | ~per_image.any(axis=1))   # whole blocks only
    assert per_image.all(axis=1).sum() == int(ratio * n_img)          # derangement: all 6 wrong
    noisy = read_caption_lines(path)
    assert sorted(noisy) == sorted(caps)
    # each chosen block is another image's block, in order
    blocks = {tuple(caps[i * a:(i + 1) * a]) for i in range(n_img)}
    assert all(tuple(noisy[i * a:(i + 1) * a]) in blocks for i in range(n_img))
    # the caption-mode file is separate and does not reuse the image-mode one
    cpath, _ = ensure_noisy_split(ann, ratio, mode="caption", log=quiet)
    assert cpath.name == "0.3_noise_train_caps.txt" and cpath != path
    assert cpath.read_bytes() == spec_noise_bytes(caps, ratio, 99)


def test_image_shuffle_edge_cases():
    caps = make_captions(10)
    assert image_shuffle(caps, 5, 0.5) == caps          # k = 1: maps to itself, no change
    assert image_shuffle(caps, 5, 0.0) == caps
    assert image_shuffle(caps, 5, 0.9, seed=1) == image_shuffle(caps, 5, 0.9, seed=1)
    with pytest.raises(ValueError, match="num_anns"):
        image_shuffle(make_captions(11), 5, 0.5)


# ------------------------------------------------------------------ ratio 0 and names
@pytest.mark.parametrize("zero", [0, 0.0])
def test_ratio_zero_returns_train_caps(tmp_path, zero):
    ann = make_ann_dir(tmp_path, make_captions(10))
    before = sorted(os.listdir(ann))
    path, mask = ensure_noisy_split(ann, zero, log=quiet)
    assert path == ann / "train_caps.txt"
    assert mask.dtype == bool and mask.shape == (10,) and not mask.any()
    assert sorted(os.listdir(ann)) == before


def test_ratio_tag_and_paths(tmp_path):
    assert ratio_tag(0.2) == "0.2" and ratio_tag(0) == "0" and ratio_tag(0.0) == "0.0"
    assert noisy_caps_path(tmp_path, 0.2) == tmp_path / "0.2_noise_train_caps.txt"
    assert noisy_caps_path(tmp_path, 0.2, "image") == tmp_path / "0.2_imgnoise_train_caps.txt"
    assert noise_mask_path(tmp_path / "0.2_noise_train_caps.txt") == \
        tmp_path / "0.2_noise_train_caps_mask.npy"
    with pytest.raises(ValueError):
        noisy_caps_path(tmp_path, 0.2, "word")


@pytest.mark.parametrize("on_disk,asked", [("0", 0.0), ("0.0", 0), ("0", 0), ("0.0", 0.0)])
def test_both_zero_spellings_found(tmp_path, on_disk, asked):
    f = tmp_path / f"{on_disk}_noise_train_caps.txt"
    f.write_text("a\n")
    assert find_noisy_caps(tmp_path, asked) == f
    assert find_noisy_caps(tmp_path, asked, "image") is None
    assert find_noisy_caps(tmp_path, 0.2) is None


# ------------------------------------------------------------------ caching
def test_reuse_does_not_rewrite(tmp_path):
    caps = make_captions(60)
    ann = make_ann_dir(tmp_path, caps)
    path, mask1 = ensure_noisy_split(ann, 0.5, log=quiet)
    old = 1_000_000_000
    files = (path, noise_mask_path(path), noise_info_path(path))
    for f in files:
        os.utime(f, ns=(old, old))
    content = path.read_bytes()
    logs = []
    path2, mask2 = ensure_noisy_split(ann, 0.5, log=logs.append)
    assert path2 == path
    assert all(f.stat().st_mtime_ns == old for f in files)
    assert path.read_bytes() == content
    assert np.array_equal(mask1, mask2)
    assert any("reusing" in m for m in logs)
    # another seed is never a silent reuse: refused, naming the recorded seed and the rebuild command
    with pytest.raises(NoisySplitError, match=r"noise seed 99, this run asks for 5.*--noise_seed 99.*--seed 5 --force"):
        ensure_noisy_split(ann, 0.5, seed=5, log=quiet)
    assert path.read_bytes() == content


def test_provenance_records_the_source_and_rebuilds_when_it_changed(tmp_path):
    caps = make_captions(60)
    ann = make_ann_dir(tmp_path, caps)
    path, _ = ensure_noisy_split(ann, 0.5, seed=7, log=quiet)
    info = json.loads(noise_info_path(path).read_text())
    assert info["seed"] == 7 and info["mode"] == "caption" and info["noise_ratio"] == "0.5"
    assert info["source_sha256"] == hashlib.sha256((ann / "train_caps.txt").read_bytes()).hexdigest()
    # train_caps.txt changes (e.g. a re-downloaded dataset): the derived file is rebuilt, not reused
    caps2 = [c + " again" for c in caps]
    (ann / "train_caps.txt").write_text("".join(c + "\n" for c in caps2))
    logs = []
    path2, mask2 = ensure_noisy_split(ann, 0.5, seed=7, log=logs.append)
    assert any("rebuilding" in m for m in logs)
    assert path2.read_bytes() == spec_noise_bytes(caps2, 0.5, 7)


def test_noisy_file_without_info_is_reused_with_unknown_seed(tmp_path):
    caps = make_captions(60)
    ann = make_ann_dir(tmp_path, caps)
    path = ann / "0.5_noise_train_caps.txt"
    path.write_bytes(spec_noise_bytes(caps, 0.5, 3))  # as downloaded from the release: no mask, no info
    logs = []
    got, mask = ensure_noisy_split(ann, 0.5, seed=99, log=logs.append)
    assert got == path and path.read_bytes() == spec_noise_bytes(caps, 0.5, 3)
    assert json.loads(noise_info_path(path).read_text())["seed"] is None
    assert any("unknown" in m for m in logs)


def test_line_count_mismatch_names_both_files(tmp_path):
    caps = make_captions(20)
    ann = make_ann_dir(tmp_path, caps)
    bad = ann / "0.2_noise_train_caps.txt"
    bad.write_text("".join(c + "\n" for c in caps[:15]), encoding="utf-8")
    content = bad.read_bytes()
    with pytest.raises(NoisySplitError) as e:
        ensure_noisy_split(ann, 0.2, log=quiet)
    msg = str(e.value)
    assert str(bad) in msg and str(ann / "train_caps.txt") in msg
    assert "15" in msg and "20" in msg
    assert isinstance(e.value, ValueError)
    assert bad.read_bytes() == content                  # neither reused nor appended to


def test_mask_derived_for_file_without_mask(tmp_path):
    caps = make_captions(10)
    ann = make_ann_dir(tmp_path, caps)
    noisy = list(caps)
    noisy[0], noisy[3] = noisy[3], noisy[0]
    f = ann / "0.2_noise_train_caps.txt"      # e.g. downloaded from the release: no mask
    f.write_text("".join(c + "\n" for c in noisy), encoding="utf-8")
    path, mask = ensure_noisy_split(ann, 0.2, log=quiet)
    assert path == f
    assert np.flatnonzero(mask).tolist() == [0, 3]
    saved = np.load(noise_mask_path(f), allow_pickle=False)
    assert saved.dtype == bool and np.array_equal(saved, mask)
    # a stale mask (not matching the files) is rewritten
    np.save(noise_mask_path(f), np.zeros(10, dtype=bool))
    _, mask2 = ensure_noisy_split(ann, 0.2, log=quiet)
    assert np.array_equal(np.load(noise_mask_path(f)), mask2) and mask2.sum() == 2


def test_written_mask_matches_lines(tmp_path):
    caps = make_captions(300)
    ann = make_ann_dir(tmp_path, caps)
    path, mask = ensure_noisy_split(ann, 0.4, log=quiet)
    saved = np.load(noise_mask_path(path), allow_pickle=False)
    assert saved.dtype == bool and np.array_equal(saved, mask)
    noisy = read_caption_lines(path)
    assert mask.tolist() == [a != b for a, b in zip(caps, noisy)]
    assert not any(p.name.endswith(".tmp") for p in ann.iterdir())   # no temp files left


# ------------------------------------------------------------------ errors and reading
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, math.nan, "0.2", True])
def test_invalid_ratio(tmp_path, bad):
    ann = make_ann_dir(tmp_path, make_captions(10))
    with pytest.raises(ValueError, match="--noise_ratio"):
        ensure_noisy_split(ann, bad, log=quiet)


def test_bad_mode_and_missing_train_caps(tmp_path):
    ann = make_ann_dir(tmp_path, make_captions(10))
    with pytest.raises(ValueError, match="mode"):
        ensure_noisy_split(ann, 0.2, mode="images", log=quiet)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty / "train_caps.txt")):
        ensure_noisy_split(empty, 0.2, log=quiet)


def test_read_caption_lines_round_trip(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes("a dog \r\nline\u2028with sep\nlone\rcr\n\nlast".encode("utf-8"))
    assert read_caption_lines(f) == ["a dog ", "line\u2028with sep", "lone\rcr", "", "last"]
    f.write_bytes(b"")
    assert read_caption_lines(f) == []


def test_noise_mask_length_mismatch():
    with pytest.raises(ValueError, match="length"):
        noise_mask(["a", "b"], ["a"])
    assert noise_mask(["a", "b"], ["a", "c"]).tolist() == [False, True]


# ------------------------------------------------------------------ CLI
def test_cli_end_to_end(tmp_path, capsys):
    cli = load_cli()
    caps = make_captions(100)
    ann = make_ann_dir(tmp_path, caps)
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0.2"]) == 0
    out = capsys.readouterr().out
    f = ann / "0.2_noise_train_caps.txt"
    mask = np.load(noise_mask_path(f))
    assert str(f) in out and f"{int(mask.sum())} / 100" in out and "%" in out
    assert f.read_bytes() == spec_noise_bytes(caps, 0.2, 99)

    # without --force a different seed is refused (naming the flag); with --force it is rebuilt
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0.2", "--seed", "1"]) == 1
    err = capsys.readouterr().err
    assert "noise seed 99" in err and "--seed 1 --force" in err
    assert f.read_bytes() == spec_noise_bytes(caps, 0.2, 99)
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0.2", "--seed", "1",
                     "--force"]) == 0
    assert f.read_bytes() == spec_noise_bytes(caps, 0.2, 1)
    assert np.array_equal(np.load(noise_mask_path(f)),
                          noise_mask(caps, read_caption_lines(f)))

    # image mode via the CLI
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0.4",
                     "--noise_mode", "image", "--num_anns", "5"]) == 0
    assert (ann / "0.4_imgnoise_train_caps.txt").is_file()
    capsys.readouterr()

    # ratio 0 reports the clean file
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0"]) == 0
    assert "train_caps.txt" in capsys.readouterr().out


@pytest.mark.parametrize("ratio", ["1.5", "-0.1", "1", "abc", "nan"])
def test_cli_bad_ratio_exits_2(tmp_path, capsys, ratio):
    cli = load_cli()
    make_ann_dir(tmp_path, make_captions(10))
    with pytest.raises(SystemExit) as e:
        cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", ratio])
    assert e.value.code == 2
    assert "--noise_ratio" in capsys.readouterr().err


def test_cli_errors_return_1(tmp_path, capsys):
    cli = load_cli()
    assert cli.main(["--dataset_root", str(tmp_path), "--noise_ratio", "0.2"]) == 1
    assert "train_caps.txt" in capsys.readouterr().err


def test_cli_every_flag_has_help():
    parser = load_cli().build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
