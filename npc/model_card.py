"""The model card of an exported folder (its ``README.md``, the Hugging Face convention): what the run did.

Method, base model, data and its fingerprint, noise, epochs, the command that repeats the run, its test table
as the run printed it, how to load the model, and what the self-check said about the data; each read from the
checkpoint and its run folder (npc/export.py writes the folder).
"""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Dict, List, Optional

from npc.config import flags_of_saved
from npc.errors import UserError

SCRIPTS = {"npc": "main_NPC.py", "clip": "main_CLIP.py"}
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| ")


def run_folder(checkpoint: Path, ckpt: Dict) -> Optional[Path]:
    """The run folder of a training checkpoint: the one its ``checkpoints/`` folder sits in, else the one its
    flags name (``--logs_dir``/``--experiments``), when it is there."""
    if checkpoint.resolve().parent.name == "checkpoints":
        here = checkpoint.resolve().parent.parent
        if (here / "log.txt").is_file() or (here / "results.json").is_file():
            return here
    run = (ckpt.get("config") or {}).get("run") or {}
    if run.get("logs") and run.get("experiments"):
        there = Path(run["logs"]) / run["experiments"]
        if (there / "results.json").is_file() or (there / "log.txt").is_file():
            return there
    return None


def run_command(ckpt: Dict) -> Optional[str]:
    """The command that repeats the run, rebuilt from the flags its checkpoint records: the script and every
    flag whose value differs from the one that script would give it (None for a checkpoint without them)."""
    from npc.params import parse_args

    config = ckpt.get("config")
    if not isinstance(config, dict) or config.get("script") not in SCRIPTS:
        return None
    script = config["script"]
    flat = flags_of_saved(ckpt)
    argv: List[str] = [] if flat.get("dataset") == "demo" else ["--dataset", str(flat.get("dataset"))]
    try:
        if flat["method"] != parse_args(argv, script).method.name:
            argv += ["--method", str(flat["method"])]
        base = parse_args([*argv, "--method", str(flat["method"])], script).flat()
    except (UserError, SystemExit, KeyError):
        return None
    for key, value in flat.items():
        if key not in base or key in ("dataset", "method") or value == base[key]:
            continue
        flag = "--logs_dir" if key == "logs" else f"--{key}"
        if key == "method_opt":
            argv += [x for opt in value if opt not in base[key] for x in ("--method_opt", opt)]
        elif value is True:
            argv.append(flag)
        elif value is None or value is False:
            continue  # not a value a flag gives
        else:
            argv += [flag, value.encode("unicode_escape").decode("ascii") if isinstance(value, str) else str(value)]
    return shlex.join(["python", SCRIPTS[script], *argv])


def printed_table(folder: Optional[Path]) -> Optional[str]:
    """The last test table the run printed in its log (its title line and table), else the table of its
    results.json."""
    if folder is None:
        return None
    log = folder / "log.txt"
    if log.is_file():
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        starts = [i for i, line in enumerate(lines) if _LOG_TIME.match(line) and " after " in line and "epochs" in line
                  and "(encoded in " in line]
        if starts:
            i = starts[-1]
            table = [_LOG_TIME.sub("", lines[i])]
            for line in lines[i + 1:]:
                if _LOG_TIME.match(line):
                    break
                table.append(line)
            return "\n".join(table)
    results = folder / "results.json"
    if results.is_file():
        from npc.evaluation_metrics import format_metrics_table

        rows = json.loads(results.read_text(encoding="utf-8")).get("results") or {}
        return format_metrics_table({f"{k} ({v['images']} images)" if "images" in v else k: v
                                     for k, v in rows.items()})
    return None


def self_check_line(folder: Optional[Path], ckpt: Dict) -> Optional[str]:
    """What the self-check said about the data (npc/self_check.py): the run's log line, else the memory bank's
    info file the run used."""
    if folder is not None and (folder / "log.txt").is_file():
        for line in (folder / "log.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            found = re.search(r"(self-check: .*|warning: scores near chance: .*)", line)
            if found:
                return found.group(1)
    try:
        from npc.config import DataConfig, ModelConfig
        from npc.memory_bank import bank_dir_for, bank_paths

        config = ckpt["config"]
        data, model = DataConfig(**config["data"]), ModelConfig(**config["model"])
        info = bank_paths(bank_dir_for(data, model), data.noise_ratio, data.noise_mode)[2]
        return json.loads(info.read_text(encoding="utf-8"))["self_check"]["message"]
    except Exception:  # no bank, data moved away, an earlier version's checkpoint: nothing recorded to quote
        return None


def _noise(data: Dict, ckpt: Dict) -> str:
    ratio = data.get("noise_ratio")
    if ratio in (None, 0, "0") or float(ratio) == 0:
        own = "the data's own noise, not measured (no ground-truth mask)" if data.get("dataset") != "demo" else \
            "the demo's clean captions"
        return f"none added (`--noise_ratio 0`): {own}"
    return (f"{float(ratio):.0%} of the training pairs made wrong on purpose (`--noise_ratio {ratio}`, `--noise_mode "
            f"{data.get('noise_mode')}`, `--noise_seed {data.get('noise_seed')}`)")


def _base_hub_id(name: str, pretrained: Optional[str]) -> Optional[str]:
    import open_clip

    if not pretrained or os.path.isfile(str(pretrained)):
        return None
    hub = (open_clip.get_pretrained_cfg(name, pretrained) or {}).get("hf_hub")
    return hub.strip("/") if hub else None


def model_card(checkpoint: Path, t: Dict, out: Path) -> str:
    """README.md of the folder: front matter of the Hugging Face convention, then what the run did."""
    ckpt = t["ckpt"] if isinstance(t["ckpt"], dict) else {}
    flat = flags_of_saved(ckpt) if ckpt else {}
    config = ckpt.get("config") or {}
    data, method = config.get("data") or {}, config.get("method") or {}
    folder = run_folder(checkpoint, ckpt) if ckpt else None
    name, pretrained = t["name"], flat.get("pretrained")
    hub = _base_hub_id(name, pretrained)
    front = ["---", "library_name: open_clip", "pipeline_tag: zero-shot-image-classification", "tags:", "- clip",
             "- open_clip", "- noisy-correspondence"]
    if hub:
        front += ["base_model:", f"- {hub}"]
    front.append("---")
    what = method.get("name") or "not recorded (a checkpoint without this project's flags)"
    title = f"# {name} fine-tuned with {method['name']}" if method.get("name") else f"# {name}, from {checkpoint.name}"
    lines = [title, "",
             "A CLIP model fine-tuned on image-caption pairs by this project (NPC, \"Negative Pre-aware for Noisy "
             "Cross-Modal Matching\", AAAI 2024, reimplemented on open_clip), exported with `export_model.py` as "
             "open_clip's hub folder.", "", "## What it is", ""]
    parts = [f"objective `{method['objective']}`"] if method.get("objective") else []
    parts.append(f"weight estimator `{method['estimator']}`" if method.get("estimator") else "no weight estimator")
    if method.get("options"):
        parts.append("options `" + ", ".join(f"{k}={v}" for k, v in method["options"].items()) + "`")
    lines.append(f"- **Method:** `{what}`" + (f" ({', '.join(parts)})" if method else ""))
    lines.append(f"- **Base model:** open_clip `{name}` (`--vision_model {t['vision_model']}`), initial weights "
                 f"`--pretrained {pretrained}`" + (f" ({hub})" if hub else ""))
    prints = ckpt.get("fingerprints") or {}
    if data:
        files = ", ".join(f"{s} `{data[f'{s}_data']}`" for s in ("train", "dev", "test") if data.get(f"{s}_data"))
        lines.append(f"- **Data:** `--dataset {data.get('dataset')}`" + (f" ({files})" if files else
                                                                         f" (`{data.get('dataset_root')}`)"))
    for split in ("train", "dev", "test"):
        p = prints.get(split)
        if isinstance(p, dict):
            lines.append(f"  - {split} fingerprint: sha256 `{p.get('sha256')}` ({p.get('pairs')} pairs, "
                         f"{p.get('images')} images)")
    if data:
        lines.append(f"- **Noise:** {_noise(data, ckpt)}")
    optim = config.get("optim") or {}
    best = ckpt.get("best") or {}
    epochs = f"{optim.get('epochs')} (`--epochs`)" if optim else "not recorded"
    lines.append(f"- **Epochs:** {epochs}; these weights: `{checkpoint.name}`, after epoch {ckpt.get('epoch')}"
                 + (f" (best dev epoch {best.get('epoch')}, dev rsum {best['rsum']:.1f})"
                    if isinstance(best.get("rsum"), (int, float)) else ""))
    command = run_command(ckpt) if ckpt else None
    lines += ["", "## The run's command", ""]
    if command:
        lines += ["Rebuilt from the flags the checkpoint records (those that differ from the script's defaults):", "",
                  "```bash", command, "```"]
    else:
        lines.append("Not recorded: the checkpoint holds no flags of this project's training scripts.")
    table = printed_table(folder)
    lines += ["", "## Test results", ""]
    if table:
        results = folder / "results.json"
        note = ""
        if results.is_file():
            run_best = (json.loads(results.read_text(encoding="utf-8")).get("best_dev") or {}).get("epoch")
            if run_best is not None and ckpt.get("epoch") is not None and run_best != ckpt.get("epoch"):
                note = (f" These are the run's best dev checkpoint's (epoch {run_best}); the weights exported here are "
                        f"epoch {ckpt.get('epoch')}'s.")
        lines += [f"As the run printed them (`{folder / 'log.txt'}`; numbers in `results.json`).{note}", "",
                  "```text", table, "```"]
    else:
        lines.append("Not found: no run folder with log.txt or results.json beside the checkpoint.")
    check = self_check_line(folder, ckpt) if ckpt else None
    lines += ["", "## What the self-check said about the data", "",
              check if check else "Nothing recorded: the run's log holds no self-check line (a run checks its model when it "
                                  "builds its memory bank, and a method without one on a user's dev split; a run "
                                  "without a bank on the demo's data checks nothing)."]
    lines += ["", "## How to load it", "", "With open_clip alone (no `add_model_config`, nothing of this project):", "",
              "```python", "import open_clip", "",
              f"model, _, preprocess = open_clip.create_model_and_transforms(\"local-dir:{out}\")",
              f"tokenizer = open_clip.get_tokenizer(\"local-dir:{out}\")", "```", "",
              "Published on the Hugging Face Hub (`open_clip.push_to_hf_hub`), the same with "
              "`\"hf-hub:USER/REPO\"`.", "",
              "## Files", "",
              "- `open_clip_config.json`: the model config (`model_cfg`) and the preprocessing (`preprocess_cfg`)",
              "- `open_clip_model.safetensors`: every weight, fp32, under open_clip's names",
              "- `vocab.json`, `merges.txt`, `tokenizer_config.json`, `special_tokens_map.json`: the CLIP BPE tokenizer "
              f"(open_clip's own vocabulary; context length {t['model'].context_length})", ""]
    return "\n".join(front + lines)
