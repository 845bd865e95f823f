"""Evaluation precision is the evaluation's own (fp32 by default), never the training's autocast."""
import json
from functools import partial

import pytest
import torch

from npc import data
import main_CLIP
from helpers import MODEL, run_args
from npc.evaluation import _rounded, encode_split, eval_precision
from npc.evaluation_metrics import retrieval_metrics
from npc.model import create_model, load_checkpoint_weights


def _result(logs, name, file="eval_results.json"):
    return json.loads((logs / name / file).read_text())


def test_eval_reports_the_fp32_table_after_amp_bf16_training(fresh_root, base_dir, tmp_path):
    logs = tmp_path / "logs"
    args = partial(run_args, fresh_root, base_dir, logs)
    trained = main_CLIP.main(args("--epochs", "1", "--experiments", "bf16", "--precision", "amp_bf16"))
    ckpt = logs / "bf16" / "checkpoints" / "best.pt"
    assert trained["eval_precision"] == "fp32" and trained["ties"] == "pessimistic"
    assert _result(logs, "bf16", "results.json")["eval_precision"] == "fp32"

    # --eval under the amp_bf16 training precision reports exactly the --precision fp32 table, which is
    # also the table the amp_bf16 training run itself reported for its best checkpoint; and the dev
    # evaluation during training was fp32 too (one epoch: best.pt is the epoch whose dev row was logged).
    for precision in ("amp_bf16", "fp32"):
        main_CLIP.main(args("--eval", "--resume", str(ckpt), "--experiments", f"ev_{precision}",
                            "--precision", precision, "--eval_splits", "dev,test"))
    ev_bf16, ev_fp32 = _result(logs, "ev_amp_bf16"), _result(logs, "ev_fp32")
    assert ev_bf16["eval_precision"] == ev_fp32["eval_precision"] == "fp32"
    dev_record = json.loads((logs / "bf16" / "metrics.jsonl").read_text().splitlines()[0])["dev"]
    assert ev_bf16["results"] == ev_fp32["results"] == {"dev": {"images": 16, **_rounded(dev_record)},
                                                         **trained["results"]}

    # The check means something: bf16 autocast moves these features and changes the table (here rsum
    # 159.0 instead of 164.0), fp32 evaluation reproduces them exactly.
    model, preprocess, tokenizer = create_model(MODEL, "none")
    load_checkpoint_weights(model, ckpt)
    split = data.load_split(fresh_root, "demo", "test", 5)
    encode = partial(encode_split, split=split, preprocess=preprocess, tokenizer=tokenizer, progress=False)
    reference = encode(model)
    with eval_precision(model, "amp_bf16", "cpu") as (m, autocast):
        bf16 = encode(m, autocast=autocast)
    with eval_precision(model, "fp32", "cpu") as (m, autocast):
        fp32 = encode(m, autocast=autocast)
    for ref, low, same in zip(reference, bf16, fp32):
        assert torch.equal(ref, same)
        assert (ref - low).abs().max() > 1e-3
    assert {"images": 20, **_rounded(retrieval_metrics(fp32[0] @ fp32[1].t(), 5))} == trained["results"]["test"]
    assert {"images": 20, **_rounded(retrieval_metrics(bf16[0] @ bf16[1].t(), 5))} != trained["results"]["test"]

    # Asking for the release's precision is honoured and recorded.
    main_CLIP.main(args("--eval", "--resume", str(ckpt), "--experiments", "ask_fp16", "--eval_precision", "fp16"))
    assert _result(logs, "ask_fp16")["eval_precision"] == "fp16"
    assert "encoded in fp16" in (logs / "ask_fp16" / "log.txt").read_text()


def test_identical_captions_tie_and_the_two_rules_bound_them(fresh_root, base_dir, tmp_path):
    # As on MSCOCO, give two test images the same captions: each image's best caption then ties exactly
    # with the identical caption of the other image (i2t), which the two rules rank on either side.
    caps = fresh_root / "annotations" / "scan_split" / "test_caps.txt"
    lines = caps.read_text(encoding="utf-8").splitlines()
    lines[5:10] = lines[0:5]
    caps.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logs = tmp_path / "logs"
    rows = {}
    for rule in ("pessimistic", "optimistic"):
        main_CLIP.main(run_args(fresh_root, base_dir, logs, "--eval", "--experiments", rule, "--ties", rule))
        result = _result(logs, rule)
        assert result["ties"] == rule
        rows[rule] = result["results"]["test"]
        assert "i2t/t2i" in (logs / rule / "log.txt").read_text()
    pes, opt = rows["pessimistic"], rows["optimistic"]
    assert pes["i2t_ties"] == opt["i2t_ties"] >= 2
    # every tied query ranks at least one place higher under the optimistic rule (ranks sum to 20 x meanr)
    assert round(20 * (pes["i2t_meanr"] - opt["i2t_meanr"])) >= pes["i2t_ties"]
    for k in ("i2t_r1", "i2t_r5", "i2t_r10", "rsum"):
        assert opt[k] >= pes[k], k
    # as t2i queries, identical captions of different images do not tie: that side is the same
    assert pes["t2i_ties"] == opt["t2i_ties"] == 0
    assert all(opt[k] == pes[k] for k in pes if k.startswith("t2i"))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same(model, snapshot):
    state = model.state_dict()
    assert all(state[k].dtype == v.dtype and torch.equal(state[k], v) for k, v in snapshot.items())


def test_eval_precision_leaves_the_training_model_untouched():
    model = create_model(MODEL, "none")[0]
    before = _snapshot(model)
    with eval_precision(model, "fp32", "cpu") as (m, _):
        assert m is model                                  # already fp32: no copy
    with eval_precision(model, "amp_bf16", "cpu") as (m, autocast):
        assert m is model
        with autocast():
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with eval_precision(model, "fp16", "cpu") as (m, _):
        assert m is not model                              # a converted copy: fp32 -> fp16 would round
        assert m.visual.conv1.weight.dtype == torch.float16
        assert m.ln_final.weight.dtype == torch.float32    # as OpenAI's fp16 CLIP: LayerNorm in fp32
    _assert_same(model, before)

    half = create_model(MODEL, "none", precision="fp16")[0]   # the release's training regime
    before = _snapshot(half)
    with eval_precision(half, "fp16", "cpu") as (m, _):
        assert m is half
    with eval_precision(half, "fp32", "cpu") as (m, _):
        assert m is not half and {p.dtype for p in m.parameters()} == {torch.float32}
        assert torch.equal(m.visual.conv1.weight, half.visual.conv1.weight.float())   # exact upcast
    _assert_same(half, before)

    with pytest.raises(ValueError, match="--eval_precision"):
        with eval_precision(model, "fp8", "cpu"):
            pass


def test_missing_cpu_fp16_kernel_names_the_flag():
    model = create_model(MODEL, "none")[0]
    with pytest.raises(RuntimeError, match="--eval_precision fp32") as e:
        with eval_precision(model, "fp16", "cpu"):
            raise RuntimeError('"slow_conv2d_cpu" not implemented for \'Half\'')
    assert "slow_conv2d_cpu" in str(e.value)
    with pytest.raises(RuntimeError, match="^other$"):   # anything else goes through unchanged
        with eval_precision(model, "fp16", "cpu"):
            raise RuntimeError("other")


def test_flags_offer_exactly_the_implemented_choices():
    from npc.evaluation import EVAL_PRECISIONS
    from npc.evaluation_metrics import TIE_RULES
    from npc.params import build_parser, parse_args

    actions = {a.dest: a for a in build_parser("npc")._actions}
    assert tuple(actions["eval_precision"].choices) == EVAL_PRECISIONS
    assert tuple(actions["ties"].choices) == TIE_RULES
    args = parse_args([], "clip")
    assert (args.evaluation.eval_precision, args.evaluation.ties) == ("fp32", "pessimistic")   # on every device
