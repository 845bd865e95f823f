"""export_model.py's folder: open_clip's hub folder, loaded by open_clip alone (``local-dir:``) in a fresh process,
with the project's features and the run's test recalls; its model card; its safetensors; its guards."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export_model
from helpers import MODEL, csv_flags, make_images_and_csvs

OPEN_CLIP_ONLY = """
import json, sys, open_clip, torch
from PIL import Image
folder, inputs, out = sys.argv[1:4]
model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
model.eval()
given = json.load(open(inputs, encoding="utf-8"))
with torch.no_grad():
    img = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in given["images"]]),
                             normalize=True)
    txt = model.encode_text(tokenizer(given["captions"]), normalize=True)
torch.save({"img": img, "txt": txt, "tokens": tokenizer(given["captions"][:2]),
            "project_imported": sorted(m for m in sys.modules if m == "npc" or m.startswith("npc."))}, out)
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 1-epoch NPC run of npc-micro on a tiny CSV dataset: its folder (checkpoints, log.txt, results.json)."""
    import main_NPC

    root = tmp_path_factory.mktemp("hub")
    files = make_images_and_csvs(root / "data")
    main_NPC.main(csv_flags(files, root / "logs", "--experiments", "run"))
    return {"dir": root / "logs" / "run", "files": files}


def test_a_folder_export_loads_with_open_clip_alone_with_the_runs_features_and_recalls(trained_run, tmp_path):
    from safetensors.torch import load_file

    from npc.config import flags_of_saved
    from npc.data import read_csv_split
    from npc.evaluation import encode_split
    from npc.evaluation_metrics import METRIC_KEYS, retrieval_metrics
    from npc.model import create_model, load_checkpoint_weights
    from npc.params import parse_args

    best = trained_run["dir"] / "checkpoints" / "best.pt"
    folder = tmp_path / "export" / "mine"
    result = export_model.main([str(best), "--out", str(folder)])
    assert result == {"model_name": f"local-dir:{folder}", "folder": str(folder), "card": str(folder / "README.md")}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "merges.txt", "open_clip_config.json", "open_clip_model.safetensors", "special_tokens_map.json",
         "tokenizer_config.json", "vocab.json"])

    # the project's model and features, as its evaluation computes them
    split = read_csv_split(trained_run["files"]["test"], "test")
    model, preprocess, tokenizer = create_model(MODEL, "none")
    load_checkpoint_weights(model, best)
    model.eval()
    img, txt = encode_split(model, split, preprocess, tokenizer, batch_size=64, progress=False)

    # open_clip alone, in a process that never imports this project, offline
    inputs, feats = tmp_path / "inputs.json", tmp_path / "feats.pt"
    inputs.write_text(json.dumps({"images": [str(p) for p in split.image_paths], "captions": list(split.captions)}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-c", OPEN_CLIP_ONLY, str(folder), str(inputs), str(feats)], check=True,
                   cwd=tmp_path, env={**env, "HF_HUB_OFFLINE": "1"})
    theirs = torch.load(feats, weights_only=True)
    assert theirs["project_imported"] == []
    assert theirs["img"].shape == img.shape and theirs["txt"].shape == txt.shape
    torch.testing.assert_close(theirs["img"], img, rtol=0, atol=1e-6)
    torch.testing.assert_close(theirs["txt"], txt, rtol=0, atol=1e-6)
    assert torch.equal(theirs["tokens"], tokenizer(split.captions[:2]))  # the run's context length, its token ids

    # docs/own_data.md's example, as written, on this folder and these images
    doc = (Path(__file__).resolve().parents[1] / "docs" / "own_data.md").read_text(encoding="utf-8")
    example = re.search(r"^## 6\. Take the model away.*?```python\n(.*?)```", doc, re.S | re.M).group(1)
    images = [str(p) for p in split.image_paths[:2]]
    example = (example.replace('"local-dir:mine"', repr(f"local-dir:{folder}"))
               .replace('["mydata/images/0001.jpg", "mydata/images/0002.png"]', repr(images))
               .replace('["a red bicycle leaning on a wall", "two dogs running on a beach"]', repr(split.captions[:2])))
    assert '"local-dir:mine"' not in example and "mydata/" not in example
    shown = subprocess.run([sys.executable, "-c", example], check=True, cwd=tmp_path, capture_output=True, text=True,
                           env={**env, "HF_HUB_OFFLINE": "1"})
    assert "tensor([[" in shown.stdout

    # the same test recalls as the run's results.json
    recorded = json.loads((trained_run["dir"] / "results.json").read_text())["results"]["test"]
    ours = retrieval_metrics(theirs["img"] @ theirs["txt"].t(), ties="pessimistic", caption_image=split.caption_image)
    for key in METRIC_KEYS:
        assert ours[key] == pytest.approx(recorded[key], abs=1e-6), key

    # every weight, fp32, under open_clip's names, equal to the checkpoint's
    weights = load_file(folder / "open_clip_model.safetensors")
    own = model.state_dict()
    assert set(weights) == set(own) and all(v.dtype == torch.float32 for v in weights.values())
    saved = torch.load(best, weights_only=True)
    assert all(torch.equal(weights[k], saved["state_dict"][k].float()) for k in own)

    # the config embeds the model config (no add_model_config needed) and the preprocessing
    config = json.loads((folder / "open_clip_config.json").read_text())
    project_cfg = json.loads((Path(__file__).resolve().parents[1] / "npc" / "model_configs" / f"{MODEL}.json").read_text())
    assert config["model_cfg"] == project_cfg
    assert config["preprocess_cfg"]["mean"] == list(model.visual.image_mean)

    # the card: method, data fingerprint, the test rsum as printed, the run's command, the self-check, how to load
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: open_clip\n") and card.count("\n---\n") == 1
    assert "**Method:** `npc_paper`" in card
    assert saved["fingerprints"]["train"]["sha256"] in card and saved["fingerprints"]["test"]["sha256"] in card
    assert f"{recorded['rsum']:.1f} |" in card and "test (6 images) |" in card
    assert "none added (`--noise_ratio 0`)" in card
    bank_check = [line for line in (trained_run["dir"] / "log.txt").read_text().splitlines() if "memory bank: " in line
                  and ("self-check: " in line or "scores near chance" in line)]
    assert bank_check and bank_check[0].split("memory bank: ", 1)[1] in card
    assert f'open_clip.create_model_and_transforms("local-dir:{folder}")' in card
    command = next(line for line in card.splitlines() if line.startswith("python main_NPC.py "))
    again = parse_args(shlex.split(command)[2:], "npc").flat()  # the command repeats the run's flags
    assert {k: v for k, v in flags_of_saved(saved).items() if k != "script" and again.get(k) != v} == {}


def test_a_folder_export_replaces_only_an_earlier_export_and_refuses_another_model(trained_run, tmp_path, capsys):
    from npc.cli import cli

    best = trained_run["dir"] / "checkpoints" / "best.pt"
    out = tmp_path / "mine"
    out.mkdir()  # an empty folder is taken
    export_model.main([str(best), "--out", str(out)])
    card = (out / "README.md").read_bytes()
    export_model.main([str(best), "--out", str(out)])  # an earlier export is replaced whole
    assert (out / "README.md").read_bytes() == card

    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("mine\n")
    a_file = tmp_path / "model"
    a_file.write_text("mine\n")
    (out / "extra.txt").write_text("mine\n")  # an export the user added a file to is no longer only an export
    for target, why in ((mine, "is a folder that holds other files than an export of export_model.py"),
                        (a_file, "exists and is not an export of export_model.py"),
                        (out, "is a folder that holds other files than an export of export_model.py"),
                        (trained_run["dir"], "is a folder that holds the checkpoint being exported")):
        assert cli(export_model.main, [str(best), "--out", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --out {target} ") and why in err and err.count("\n") == 1, err
        assert "choose another --out" in err
    assert (mine / "todo.txt").read_text() == "mine\n" and a_file.read_text() == "mine\n"
    assert (out / "README.md").read_bytes() == card

    with pytest.raises(ValueError, match=r"is a checkpoint of npc-micro .*not of --vision_model npc-tiny"):
        export_model.main([str(best), "--out", str(tmp_path / "other"), "--vision_model", "npc-tiny"])
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(best, weights_only=True)["state_dict"], bare)
    with pytest.raises(ValueError, match=r"bare.pt does not fit this model"):
        export_model.main([str(bare), "--out", str(tmp_path / "other"), "--vision_model", "npc-tiny"])
    assert not (tmp_path / "other").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))  # the weights are 6 MB
import export_model
from npc.cli import cli
sys.exit(cli(export_model.main, sys.argv[1:]))
"""


def test_a_full_disk_keeps_the_earlier_export_and_leaves_nothing_behind(trained_run, tmp_path):
    from helpers import CHILD_PYTHONPATH

    best = trained_run["dir"] / "checkpoints" / "best.pt"
    out = tmp_path / "mine"
    export_model.main([str(best), "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    shown = subprocess.run([sys.executable, "-c", FULL_DISK, str(best), "--out", str(out)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": CHILD_PYTHONPATH})
    assert shown.returncode == 1 and shown.stderr.startswith(f"error: cannot write the export {out}: disk full or file "
                                                             f"too large") and shown.stderr.count("\n") == 1, shown.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_vit_b_32_export_holds_open_clips_config_of_it(tmp_path):
    """ViT-B/32 (random weights: nothing downloaded) exports as open_clip's ViT-B-32-quickgelu, QuickGELU included,
    with OpenAI's preprocessing and 77 tokens; open_clip builds it from the folder with the same weights. A bare
    state dict records no run: the card says so. The slowest test of this file (three ViT-B/32 models built)."""
    import open_clip

    from npc.model import create_model

    model = create_model("ViT-B/32", "none", init_seed=0)[0]
    ckpt = tmp_path / "vit.pt"
    torch.save({"vision_model": "ViT-B/32", "state_dict": model.state_dict()}, ckpt)
    out = tmp_path / "vit"
    export_model.main([str(ckpt), "--out", str(out)])
    config = json.loads((out / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config("ViT-B-32-quickgelu") and config["model_cfg"]["quick_gelu"]
    assert config["preprocess_cfg"]["mean"] == list(open_clip.OPENAI_DATASET_MEAN)
    assert config["preprocess_cfg"]["std"] == list(open_clip.OPENAI_DATASET_STD)
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 77
    # the tokenizer's files are open_clip's vocabulary: its ids, OpenAI's names of the two special tokens, its merges
    vocab, simple = json.loads((out / "vocab.json").read_text()), open_clip.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert vocab == {names.get(k, k): v for k, v in simple.encoder.items()} and vocab["<|endoftext|>"] == 49407
    merges = (out / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and [tuple(m.split()) for m in merges[1:]] == sorted(simple.bpe_ranks,
                                                                                             key=simple.bpe_ranks.get)

    loaded = open_clip.create_model("local-dir:" + str(out))
    assert type(loaded.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert loaded.context_length == 77 and open_clip.get_tokenizer("local-dir:" + str(out)).context_length == 77
    theirs, own = loaded.state_dict(), model.state_dict()
    assert set(theirs) == set(own) and all(torch.equal(theirs[k], own[k]) for k in own)
    card = (out / "README.md").read_text()
    assert "\n# ViT-B-32-quickgelu, from vit.pt\n" in card and "**Method:** `not recorded" in card
    assert "## The run's command\n\nNot recorded" in card and "## Test results\n\nNot found" in card


def test_the_folders_tokenizer_files_tokenize_as_open_clip_in_transformers(request, tmp_path):
    """Where transformers is installed (it is not a requirement of this project), its CLIPTokenizer reads the
    folder's files and gives open_clip's token ids on ordinary captions."""
    transformers = pytest.importorskip("transformers")
    import open_clip

    out = tmp_path / "mine"
    run = request.getfixturevalue("trained_run")  # trained only where the test runs
    export_model.main([str(run["dir"] / "checkpoints" / "best.pt"), "--out", str(out)])
    theirs, ours = transformers.CLIPTokenizer.from_pretrained(str(out)), open_clip.get_tokenizer(f"local-dir:{out}")
    for caption in ["a red bicycle leaning on a wall", "Two DOGS running, on a beach!!", "it's 2024: a café"]:
        assert theirs(caption)["input_ids"] == [t for t in ours([caption])[0].tolist() if t]
