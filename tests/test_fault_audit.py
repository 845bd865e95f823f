"""Fault audit: exports that would replace other files, images PIL decodes differently than a viewer shows
them (16-bit, EXIF-rotated) or refuses (decompression bombs), a disk that fills while a checkpoint is written,
a run folder's lock after a kill, SIGTERM, and files that are not checkpoints. Each case ends in one clear
line naming the file or flag, or in the right result; nothing on disk is lost (docs/failure.md)."""
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import MODEL, make_images_and_csvs
from npc import data, images, loaders
from npc.csv_format import DataError


# ----------------------------------------------------------------------------- images: one decoding rule

def test_16_bit_grayscale_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.integers(120, 163, size=(24, 24)) * 257).astype(np.uint16)  # mean about 141 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
        assert np.asarray(raw.convert("RGB")).mean() > 250  # PIL's plain conversion clips to white
    rgb = np.asarray(images.open_rgb(path))
    assert rgb.shape == (24, 24, 3) and rgb.dtype == np.uint8
    assert abs(rgb.mean() - values.mean() / 257) < 0.5
    assert (rgb[..., 0] == np.round(values / 257)).all() and (rgb[..., 0] == rgb[..., 2]).all()
    # the same pixels wherever an image is decoded for the model
    assert np.array_equal(loaders.load_image(path, np.asarray), rgb)
    assert data.decode_error(path) is None


def _rotated_jpeg(path):
    """A 40 x 20 JPEG, red on its left half, with EXIF orientation 6 (a viewer turns it 90 degrees clockwise)."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[images.ORIENTATION] = 6
    img.save(path, exif=exif.tobytes(), quality=95)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "sideways.jpg"
    _rotated_jpeg(path)
    rgb = np.asarray(images.open_rgb(path)).astype(int)
    assert rgb.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    assert rgb[5, 10, 0] > 200 and rgb[35, 10, 2] > 200  # the red half is on top after the turn
    assert loaders.load_image(path, np.asarray).shape == (40, 20, 3)
    assert data.decode_error(path) is None


@pytest.fixture
def bombs(tmp_path, monkeypatch):
    """CSV data whose train and dev splits each hold two images over PIL's decompression-bomb limit (lowered
    for the test): one past the limit (PIL warns) and one past twice the limit (PIL refuses)."""
    files = make_images_and_csvs(tmp_path / "data", n_train=8, n_dev=6, n_test=3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the images are 40 x 40 = 1600 pixels
    out = {}
    for split in ("train", "dev"):
        s = data.read_csv_split(files[split], split, check_images=False)
        for i, side in enumerate([40] + [50] + [30] * (s.num_images - 2)):  # 1600, 2500, then 900 pixels
            Image.new("RGB", (side, side), (9, 9, 9)).save(s.image_paths[i], format="PNG")
        out[split] = (files[split], [0, 1])
    return out


def test_decompression_bomb_is_an_unreadable_image(bombs):
    train_csv, bad = bombs["train"]
    split = data.read_csv_split(train_csv, "train")  # the header check lets them through to be skipped
    for i in bad:
        with pytest.raises(DataError, match=f"cannot read image {split.image_paths[i]}: .*decompression-bomb"):
            images.open_rgb(split.image_paths[i])
        assert "decompression-bomb" in data.decode_error(split.image_paths[i])
    from npc.model import create_model

    _, preprocess, _ = create_model(MODEL, "none")
    tokenizer = lambda caps: torch.zeros(len(caps), 8, dtype=torch.long)  # noqa: E731
    everything = np.arange(len(split))
    with pytest.raises(DataError) as e:  # a training batch without --skip_unreadable_images
        loaders.PairBatches(split, preprocess, tokenizer)[everything]
    assert str(split.image_paths[0]) in str(e.value) and "--skip_unreadable_images" in str(e.value)
    assert "\n" not in str(e.value)
    batch = loaders.PairBatches(split, preprocess, tokenizer, skip_unreadable=True)[everything]
    assert sorted(batch["skipped_images"].tolist()) == bad
    assert not np.isin(batch["image_index"].numpy(), bad).any()
    with pytest.raises(DataError, match=str(split.image_paths[0])):  # the memory bank's (and evaluation's) encoding
        list(loaders.image_loader(split, preprocess, batch_size=4, num_workers=0))
    dev_csv, bad = bombs["dev"]
    dev = data.read_csv_split(dev_csv, "dev", check_images=False)
    with pytest.raises(DataError, match=f"cannot read image {dev.image_paths[0]}: .*--skip_unreadable_images"):
        data.readable_split(dev)
    kept, dropped = data.readable_split(dev, skip=True)
    assert dropped == bad and kept.num_images == dev.num_images - 2
