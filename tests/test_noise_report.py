"""Your data's noise, seen: the noise report (find_noisy_pairs.py), what a run did to each pair
(pair_weights.npz), and a model to take away (export_model.py)."""
import csv
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import export_model
import find_noisy_pairs
import get_memorybank
import main_CLIP
import main_NPC
from helpers import MODEL, csv_flags, make_images_and_csvs, report_flags, run_args
from npc.cli import cli
from npc.pair_weights import load_pair_weights


def read_pairs(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Page(HTMLParser):
    """The parts of index.html a test looks at: images, resource references, the suspicious table's rows."""

    def __init__(self):
        super().__init__()
        self.refs, self.images, self.rows, self.section = [], [], {}, None
        self._text = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action") and v]
        if tag == "h2":
            self.section = a.get("id")
        if tag == "img":
            self.images.append((self.section, a.get("src", "")))
        if tag == "div" and a.get("class") == "cap":
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "div" and self._text is not None:
            self.rows.setdefault(self.section, []).append("".join(self._text))
            self._text = None


# ----------------------------------------------------------------------------- what a run did to each pair

@pytest.mark.parametrize("script, method", [(main_CLIP, "clip"), (main_CLIP, "gmm_filter"), (main_CLIP, "osa"),
                                            (main_CLIP, "pclean_weight"), (main_NPC, "npc_paper")])
def test_every_method_writes_its_per_pair_weights_and_their_mean_is_the_logged_mean(fresh_root, base_dir, tmp_path,
                                                                                    script, method):
    logs = tmp_path / "logs"
    script.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "r", "--method", method))
    pw = load_pair_weights(logs / "r")
    record = json.loads((logs / "r" / "metrics.jsonl").read_text().splitlines()[0])
    n = 400  # 80 images x 5 captions; batch 16 draws every pair once per epoch
    assert pw.weights.shape == (1, n) and pw.epochs.tolist() == [1] and pw.method == method
    row = pw.weights[0]
    if method in ("clip", "gmm_filter"):
        assert "npc" not in record  # no estimator: nothing logged, the file says what was trained on
        if method == "clip":
            assert pw.kind == "uniform" and np.all(row == 1)
        else:
            p_clean = np.load(fresh_root / "annotations" / "memory_bank" / "0.4_mbank_pclean.npy")
            kept = p_clean > 0.9
            assert pw.kind == "selection" and np.all(row[~kept] == 0)
            drawn = kept.sum() // 16 * 16  # the subset's last incomplete batch is dropped
            assert np.sum(row == 1) == drawn and np.isnan(row[kept]).sum() == kept.sum() - drawn
    else:
        assert pw.kind == "estimator" and np.isfinite(row).all()
        assert np.nanmean(row) == pytest.approx(record["weights"]["mean_weight"], rel=1e-5)
    if method == "pclean_weight":  # its weights are the bank's p(clean), looked up per pair
        p_clean = np.load(fresh_root / "annotations" / "memory_bank" / "0.4_mbank_pclean.npy")
        np.testing.assert_allclose(row, p_clean, rtol=1e-6)


def test_a_resumed_run_keeps_one_row_per_epoch(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    flags = run_args(fresh_root, base_dir, logs, "--epochs", "2", "--experiments", "r", "--method", "osa")
    main_CLIP.main(flags + ["--stop_after", "1"])
    first = load_pair_weights(logs / "r").weights[0]
    main_CLIP.main(flags + ["--resume", "latest"])
    pw = load_pair_weights(logs / "r")
    assert pw.epochs.tolist() == [1, 2] and np.array_equal(pw.weights[0], first)
    means = [json.loads(line)["weights"]["mean_weight"] for line in (logs / "r" / "metrics.jsonl").read_text().splitlines()]
    assert np.nanmean(pw.weights, axis=1) == pytest.approx(means, rel=1e-5)


# ----------------------------------------------------------------------------- the report

def test_report_of_the_demo_has_the_banks_pclean_and_every_detectors_numbers(fresh_root, base_dir, tmp_path):
    get_memorybank.main(report_flags(fresh_root, base_dir, tmp_path / "unused")[:-2])
    bank_dir = fresh_root / "annotations" / "memory_bank"
    bank_info = json.loads((bank_dir / "0.4_mbank_info.json").read_text())
    bank_pclean = np.load(bank_dir / "0.4_mbank_pclean.npy")
    out = tmp_path / "report"
    summary = find_noisy_pairs.main(report_flags(fresh_root, base_dir, out, "--top", "7", "--candidates", "3"))
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "pairs.csv", "report.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []  # no temporary folder left
    rows = read_pairs(out / "pairs.csv")
    assert len(rows) == 400 and [int(r["rank"]) for r in rows] == list(range(1, 401))
    p_clean = np.zeros(400)
    for r in rows:
        p_clean[int(r["pair"])] = float(r["p_clean"])
    np.testing.assert_allclose(p_clean, bank_pclean, rtol=1e-5, atol=1e-12)  # the bank's numbers
    exact = bank_pclean[[int(r["pair"]) for r in rows]]
    assert np.all(np.diff(exact) >= 0)  # most suspicious first: p(clean) ascending,
    cos = np.array([float(r["cosine"]) for r in rows])
    assert np.all(np.diff(cos)[np.diff(exact) == 0] >= 0)  # ties by cosine ascending
    assert all(int(r["flagged"]) == (float(r["p_clean"]) <= 0.9) for r in rows)
    mask = np.load(fresh_root / "annotations" / "scan_split" / "0.4_noise_train_caps_mask.npy")
    assert all(int(r["noisy"]) == mask[int(r["pair"])] for r in rows)
    report = json.loads((out / "report.json").read_text())
    assert report == summary
    det = report["detectors"]
    assert det["p_clean"]["auc"] == pytest.approx(bank_info["p_clean_auc"], abs=1e-12)
    for name in ("p_clean", "cosine", "osa_score"):
        assert 0 <= det[name]["auc"] <= 1 and det[name]["mean_noise_rank"] > 0
    assert report["flagged"] == 400 - bank_info["n_clean"]
    assert set(report["columns"]) >= {"rank", "key", "image", "caption", "p_clean", "noisy", "pair"}
    assert report["timing"]["s_per_1000_pairs"] > 0

    page_text = (out / "index.html").read_text(encoding="utf-8")
    page = Page()
    page.feed(page_text)
    assert page.refs and all(ref.startswith("data:image/jpeg;base64,") for ref in page.refs)  # all embedded
    rest = re.sub(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", "", page_text)
    assert not re.search(r"https?:|//|url\(|@import|<link|<script[^>]*src|fetch\(|XMLHttpRequest", rest)  # nothing fetched
    assert rest.count("<script") == 2  # the decision mode: its data and its script, inline
    # every shown pair's key, as the data source defines it (the demo: the line of its captions file), in report.json
    assert [r["key"] for r in report["shown"]["rows"]] == [r["key"] for r in rows[:7]] + [
        r["key"] for r in rows[::-1][:8]]
    assert report["dataset"]["key"]["name"] == "line"
    assert len(report["identity"]["data_fingerprint"]) == 64 and page_text.count('class="d wrong"') == 7 + 8
    shown = [src for section, src in page.images if section == "suspicious"]
    assert len(shown) == 7 and len(page.rows["suspicious"]) == 7
    for r, text in zip(rows[:7], page.rows["suspicious"]):
        assert text.startswith(r["caption"])
    assert len(page.rows["trusted"]) == 8
    for name in ("p_clean", "cosine", "osa_score"):  # every detector's AUC and mean noise rank in the page
        assert f"{det[name]['auc']:.3f}" in page_text and f"{det[name]['mean_noise_rank']:.1f}" in page_text
    assert page_text.count("<svg") == 3 and page_text.count('<ol class="cand">') == 7


def test_report_of_your_csv_gives_its_row_numbers_and_a_runs_weights(tmp_path):
    files = make_images_and_csvs(tmp_path / "mydata")
    logs = tmp_path / "logs"
    main_CLIP.main(csv_flags(files, logs, "--experiments", "mine", "--noise_ratio", "0", "--method", "osa"))
    out = tmp_path / "report"
    flags = ["--dataset", "csv", "--train_data", str(files["train"]), "--vision_model", "npc-micro", "--pretrained",
             "none", "--num_workers", "0", "--no_progress", "--out", str(out), "--top", "5", "--batch_size", "8",
             "--run", str(logs / "mine")]
    summary = find_noisy_pairs.main(flags)
    assert summary["detectors"].startswith("not measurable") and summary["ground_truth"] is None
    rows = read_pairs(out / "pairs.csv")
    assert "noisy" not in rows[0] and "weight_mine" in rows[0]
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    assert len(rows) == len(lines) - 1
    for r in rows:  # the user's own line: its image and its caption
        assert lines[int(r["key"]) - 1] == f"{r['image']}\t{r['caption']}"
    weights = load_pair_weights(logs / "mine").mean_over_epochs()
    for r in rows:
        w = weights[int(r["pair"])]
        assert (r["weight_mine"] == "") if np.isnan(w) else float(r["weight_mine"]) == pytest.approx(w, rel=1e-5)
    assert summary["runs"]["mine"]["method"] == "osa"

    # A run of another training split is refused, naming the flag
    other = make_images_and_csvs(tmp_path / "other", n_train=10)
    with pytest.raises(ValueError, match=r"--run .*mine.*another training split"):
        find_noisy_pairs.main([f if f != str(files["train"]) else str(other["train"]) for f in flags])


def test_csv_cells_a_spreadsheet_would_run_are_escaped_and_read_back():
    from npc.io import formula_safe, formula_unescape

    cases = {"=1+1": "'=1+1", "+x": "'+x", "-x": "'-x", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\r=x": "'\r=x",
             "'=x": "''=x", "a=b": "a=b", "'tis": "'tis", "-0.5": "-0.5", "+3": "+3", "-1e-05": "-1e-05",
             "- 3": "'- 3", "": "", 7: 7}
    for text, cell in cases.items():
        assert formula_safe(text) == cell
        if isinstance(text, str):
            assert formula_unescape(cell) == text


def test_pairs_csv_escapes_formulas_and_the_page_shows_each_candidate_text_once(tmp_path):
    from npc.io import formula_unescape

    files = make_images_and_csvs(tmp_path / "mydata")
    formula = '=HYPERLINK("http://x","y")'
    tricky = 'A "quoted" cup, </script><script>alert(1)</script> & a // path'
    with open(files["train"], "a", encoding="utf-8") as f:
        f.write(f"images/train_0.jpg\t{formula}\n")
        f.write(f"images/train_2.jpg\t{tricky}\n")
    out = tmp_path / "report"
    summary = find_noisy_pairs.main(["--dataset", "csv", "--train_data", str(files["train"]), "--vision_model",
                                     "npc-micro", "--pretrained", "none", "--num_workers", "0", "--no_progress",
                                     "--out", str(out), "--top", "60", "--candidates", "12", "--batch_size", "8"])
    # the page's data for its decision mode: one script element whatever a caption holds, each pair's key the line
    # of the user's CSV, the caption as pairs.csv writes it
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count("</script>") == 2 and "<script>alert" not in page
    data = json.loads(re.search(r'<script type="application/json" id="npc-report">(.*?)</script>', page).group(1))
    with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
        by_pair = {r["pair"]: r for r in csv.DictReader(f)}
    assert set(data["pairs"]) == {str(r["pair"]) for r in summary["shown"]["rows"]}
    assert data["identity"] == summary["identity"] and len(by_pair) <= 60  # every pair shown
    assert all(v["key"] == by_pair[p]["key"] and v["caption"] == by_pair[p]["caption"]
               for p, v in data["pairs"].items())
    assert sum(v["caption"] == tricky for v in data["pairs"].values()) == 1
    with open(out / "pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    caption = [r[header.index("caption")] for r in rows]
    assert [c for c in caption if c.startswith("'")] == ["'" + formula]  # the one formula, escaped; no other
    assert sum(float(r[header.index("osa_score")]) < 0 for r in rows) > 0  # negative numbers stay numbers

    # candidates: a text several pairs hold is one item, with its count and the key (here the CSV line) of each pair
    page = (out / "index.html").read_text(encoding="utf-8")
    split_captions = {int(r[header.index("pair")]): formula_unescape(c) for r, c in zip(rows, caption)}
    lists = re.findall(r'<ol class="cand">(.*?)</ol>', page)
    assert len(lists) == len(summary["shown"]["candidates"]) > 0
    grouped = 0
    cells = re.findall(r'<td class="cands">(.*?)</td>', page, re.S)
    for items, cands, cell in zip(lists, summary["shown"]["candidates"], cells):
        texts = [split_captions[c] for c, _, _ in cands]
        keys = {c: key for c, _, key in cands}  # every candidate with its key, in report.json
        shown = re.findall(r"<li>(.*?) <span", items)
        assert len(shown) == len(set(texts)) and len(set(shown)) == len(shown)
        merged = len(texts) - len(set(texts))  # equal texts merged, and the page says so
        assert (f"{merged} with a text shown above: equal texts merged" in cell) == (merged > 0)
        for item in re.findall(r"<li>.*?</li>", items):
            if " pairs with this text, lines " in item:
                grouped += 1
                n = int(re.search(r", (\d+) pairs with this text, lines ", item).group(1))
                listed = re.search(r"lines ([\d, ]+)\)", item).group(1).split(", ")
                assert n > 1 and len(listed) == n and set(listed) <= set(keys.values())
    assert grouped > 0


def test_a_run_without_per_pair_weights_is_one_line_not_a_histogram():
    from types import SimpleNamespace

    from npc.pair_weights import PairWeights
    from npc.report_figures import run_note

    def run(kind, method, rows):
        w = np.array(rows, dtype=np.float32)
        return PairWeights(weights=w, epochs=np.arange(1, len(w) + 1), kind=kind, method=method, split_sha256="",
                           path=Path("x"))

    nan = float("nan")
    d = SimpleNamespace(runs={"plain": run("uniform", "clip", [[1, 1, nan, 1]]),
                              "none": run("uniform", "clip", [[nan, nan, nan, nan]]),
                              "osa": run("estimator", "osa", [[0.2, 1, 0.7, nan], [0.4, 1, 0.7, nan]])})
    means = {name: pw.mean_over_epochs() for name, pw in d.runs.items()}
    assert run_note(d, "plain", means["plain"]) == ("run plain: clip (uniform), 1 epoch: no per-pair weights: every "
                                                    "pair drawn has weight 1 (3 pairs; 1 never drawn).")
    assert run_note(d, "none", means["none"]) == "run none: clip (uniform), 1 epoch: no per-pair weights (no pair " \
                                                 "was drawn)."
    assert run_note(d, "osa", means["osa"]) is None  # weights that differ: a histogram


def test_bad_input_is_one_line_and_leaves_no_report(tmp_path, base_dir, fresh_root, capsys, monkeypatch):
    files = make_images_and_csvs(tmp_path / "d")
    (tmp_path / "d" / "images" / "train_3.png").unlink()
    out = tmp_path / "report"
    flags = ["--dataset", "csv", "--train_data", str(files["train"]), "--vision_model", "npc-micro", "--pretrained",
             "none", "--num_workers", "0", "--no_progress", "--out", str(out)]
    assert cli(find_noisy_pairs.main, flags) == 1
    err = capsys.readouterr().err.strip()
    line = next(k + 1 for k, t in enumerate(files["train"].read_text().splitlines()) if "train_3.png" in t)
    assert err.count("\n") == 0 and f"train.csv, line {line}: image not found" in err
    assert not out.exists()

    # a checkpoint of another model is refused by name
    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "c"))
    best = logs / "c" / "checkpoints" / "best.pt"
    assert cli(find_noisy_pairs.main, report_flags(fresh_root, base_dir, out, "--resume", str(best),
                                                   "--vision_model", "npc-tiny")) == 1
    err = capsys.readouterr().err.strip()
    assert "is a checkpoint of npc-micro" in err and "--vision_model npc-tiny" in err and not out.exists()

    # a folder that is not a report is never overwritten
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert cli(find_noisy_pairs.main, report_flags(fresh_root, base_dir, tmp_path / "mine")) == 1
    assert "is not a noise report" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"

    # a failure while writing leaves neither the report nor its temporary folder; an earlier report stays whole
    from npc import report_page

    find_noisy_pairs.main(report_flags(fresh_root, base_dir, out, "--resume", str(best), "--top", "3"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(path, d):
        path.write_text("half")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(report_page, "write_pairs_csv", broken)
    assert cli(find_noisy_pairs.main, report_flags(fresh_root, base_dir, out, "--resume", str(best))) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


# ----------------------------------------------------------------------------- the model to take away

OPEN_CLIP_ONLY = """
import sys, open_clip, torch
from PIL import Image
config, name, file, out = sys.argv[1:5]
open_clip.add_model_config(config)
model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=file)
tokenizer = open_clip.get_tokenizer(name)
model.eval()
paths, captions = sys.argv[5].split("|"), sys.argv[6].split("|")
with torch.no_grad():
    img = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths]), normalize=True)
    txt = model.encode_text(tokenizer(captions), normalize=True)
torch.save({"img": img, "txt": txt, "npc_imported": "npc" in sys.modules}, out)
"""


def test_an_exported_checkpoint_loads_in_open_clip_alone_with_the_projects_features(fresh_root, base_dir, tmp_path):
    from npc import data
    from npc import loaders
    from npc.model import create_model, encode, load_checkpoint_weights

    logs = tmp_path / "logs"
    main_CLIP.main(run_args(fresh_root, base_dir, logs, "--epochs", "1", "--experiments", "c"))
    best = logs / "c" / "checkpoints" / "best.pt"
    result = export_model.main([str(best), "--out", str(tmp_path / "export" / "mine.pt")])
    assert result["model_name"] == MODEL and Path(result["config"]).name == f"{MODEL}.json"

    split = data.load_split(fresh_root, "demo", "test")
    paths, captions = [str(p) for p in split.image_paths[:6]], split.captions[:6]
    feats = tmp_path / "feats.pt"
    subprocess.run([sys.executable, "-c", OPEN_CLIP_ONLY, result["config"], result["model_name"], result["file"],
                    str(feats), "|".join(paths), "|".join(captions)], check=True, cwd=tmp_path)
    theirs = torch.load(feats, weights_only=True)
    assert theirs["npc_imported"] is False

    model, preprocess, tokenizer = create_model(MODEL, "none")
    load_checkpoint_weights(model, best)
    model.eval()
    with torch.no_grad():
        img, txt = encode(model, torch.stack([loaders.load_image(p, preprocess) for p in paths]), tokenizer(captions))
    torch.testing.assert_close(theirs["img"], img, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(theirs["txt"], txt, rtol=1e-5, atol=1e-6)
    base = create_model(MODEL, "none", init_seed=0)[0].eval()
    with torch.no_grad():
        assert not torch.allclose(base.encode_text(tokenizer(captions), normalize=True), txt, atol=1e-3)

    # docs/own_data.md's retrieval example, as written, on this export and these images
    doc = (Path(__file__).resolve().parents[1] / "docs" / "own_data.md").read_text(encoding="utf-8")
    example = re.search(r"^##[^\n]*Use the model.*?```python\n(.*?)```", doc, re.S | re.M).group(1)
    example = (example.replace('"ViT-B-32-quickgelu"', repr(MODEL)).replace('"mine.pt"', repr(result["file"]))
               .replace('["mydata/images/0001.jpg", "mydata/images/0002.png"]', repr(paths[:2][::-1]))
               .replace('["a red bicycle leaning on a wall", "two dogs running on a beach"]', repr(captions[:2])))
    assert '"mydata/' not in example and '"mine.pt"' not in example and '"ViT-B' not in example
    example = f"import open_clip\nopen_clip.add_model_config({result['config']!r})\n" + example
    shown = subprocess.run([sys.executable, "-c", example], check=True, cwd=tmp_path, capture_output=True, text=True)
    assert "tensor([[" in shown.stdout

    with pytest.raises(ValueError, match=r"is a checkpoint of npc-micro .*not of --vision_model npc-tiny"):
        export_model.main([str(best), "--out", str(tmp_path / "x.pt"), "--vision_model", "npc-tiny"])
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(best, weights_only=True)["state_dict"], bare)
    with pytest.raises(ValueError, match=r"bare.pt does not record its model: pass --vision_model"):
        export_model.main([str(bare), "--out", str(tmp_path / "x.pt")])
    with pytest.raises(ValueError, match=r"bare.pt does not fit this model"):
        export_model.main([str(bare), "--out", str(tmp_path / "x.pt"), "--vision_model", "npc-tiny"])
    assert not (tmp_path / "x.pt").exists()
