"""The README and docs/ are checked against the repository: every link and every repository path they
cite exists, and the numbers they quote are the ones the records and the published tables give."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
PUBLISHED = REPO / "docs" / "published_results.md"

LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# A repository file named in code: a relative path with a folder and a file extension.
CODE_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+\.(?:py|md|json|jsonl|png|sh|txt|yaml|toml)$")
# A path into one of the repository's own folders, a file or a folder (trailing slash).
REPO_PATH = re.compile(r"^(?:bench|npc|docs|tests|\.ci)/[\w./-]*$")
# Folders whose files are the user's (weights, runs, data) or the scripts' outputs, not the repository's.
USER_FOLDERS = ("pre-trained_models", "logs", "dataset/demo")
GENERATED = ("bench/runs",)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path):
    return {github_anchor(m) for m in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M)}


def inside_repo(base: Path, target: str) -> Path:
    path = (base / target).resolve()
    assert path.is_relative_to(REPO), f"{target} points outside the repository"
    assert path.exists(), f"{target} does not exist in the repository"
    return path


def cites_a_repository_file(token: str, fenced: bool = False) -> bool:
    """Whether a word of the docs' code names a file or folder of the repository. In fenced blocks
    (commands, layouts, example files) only paths into a top-level folder of the repository do: a
    CSV example's ``images/0002.png`` is the user's."""
    token = token.strip("'\",;:()")
    if any(token == u or token.startswith(u + "/") for u in USER_FOLDERS + GENERATED):
        return False
    if fenced and not (REPO / token.split("/")[0]).is_dir():
        return False
    return bool(CODE_PATH.match(token) or REPO_PATH.match(token))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    for _, target in LINK.findall(text):
        if re.match(r"https?://", target):   # citations of other projects on the web
            continue
        file, _, fragment = target.partition("#")
        path = inside_repo(doc.parent, file) if file else doc
        if fragment:
            assert path.suffix == ".md", f"{doc.name}: #{fragment} points into {path.name}, not a markdown page"
            assert fragment in anchors(path), f"{doc.name}: no heading #{fragment} in {path.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_path_the_docs_cite_exists(doc):
    text = doc.read_text(encoding="utf-8")
    # A markdown file named outside a link (the link's own target is checked above): beside the doc,
    # or a path from the repository root.
    for name in set(re.findall(r"[\w./-]*\w\.md\b", LINK.sub("", text))):
        base = REPO if "/" in name and not name.startswith(".") else doc.parent
        inside_repo(base, name)
    for block in FENCE.findall(text):
        for token in block.split():
            if cites_a_repository_file(token, fenced=True):
                inside_repo(REPO, token.strip("'\",;:()"))
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        for token in span.split():
            if cites_a_repository_file(token):
                inside_repo(REPO, token.strip("'\",;:()"))


def test_the_path_checks_catch_what_is_missing():
    made_up = "bench" + "/no_such_study.py"   # spelt apart, so that the scan of the code's citations skips it
    assert cites_a_repository_file(made_up) and cites_a_repository_file(made_up, fenced=True)
    assert cites_a_repository_file("npc/synthetic/") and cites_a_repository_file("dataset/MSCOCO_rename.py")
    assert cites_a_repository_file("my/train.py") and not cites_a_repository_file("my/train.py", fenced=True)
    assert not cites_a_repository_file("logs/run/checkpoints/best.pt") and not cites_a_repository_file("dataset/demo/")
    with pytest.raises(AssertionError):
        inside_repo(REPO, made_up)
    with pytest.raises(AssertionError):
        inside_repo(REPO / "docs", "../../outside.md")
    assert {"method.md", "demo.md", "studies/benchmark.md"} <= {t for _, t in LINK.findall(
        "[a](method.md) ![b](demo.md) [c](studies/benchmark.md)")}
    assert github_anchor("5. What the reference release does instead") == "5-what-the-reference-release-does-instead"


def test_the_readme_links_every_page_of_the_docs():
    linked = {t.partition("#")[0] for _, t in LINK.findall((REPO / "README.md").read_text(encoding="utf-8"))}
    pages = {p.relative_to(REPO).as_posix() for p in DOCS if p.parent != REPO}
    assert pages - linked == set(), "README.md does not link these pages of docs/"


def test_the_readme_layout_names_every_module_of_the_package():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = FENCE.search(layout).group(0)
    named = set(re.findall(r"npc/[\w/]+\.py|npc/\w+/", layout))
    # a module named after another on its line: "npc/model.py ... losses.py", "npc/synthetic/ ... scenes.py"
    folders = {"npc/"} | {p for p in named if p.endswith("/")}
    for folder in folders:
        named |= {folder + f for f in re.findall(r"\b(\w+\.py)\b", layout) if (REPO / folder / f).is_file()}
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "npc").rglob("*.py")
               if p.name != "__init__.py" and "__pycache__" not in p.parts}
    assert modules - named == set(), "README.md's layout does not name these modules"


def test_the_readme_links_its_published_numbers():
    readme = REPO / "README.md"
    assert "docs/published_results.md" in [t for _, t in LINK.findall(readme.read_text(encoding="utf-8"))]


def published_tables():
    """{section heading: [row cells]} of docs/published_results.md."""
    tables, section = {}, None
    for line in PUBLISHED.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("| ") and section and not line.startswith("| noise"):
            tables.setdefault(section, []).append([c.strip() for c in line.strip("|").split("|")])
    return tables


def test_published_rsums_are_the_sums_of_the_published_recalls():
    tables = published_tables()
    assert tables and all(tables.values())
    for section, rows in tables.items():
        for noise, method, *cells in rows:
            recalls, rsum = [float(c) for c in cells[:6]], float(cells[6])
            assert round(sum(recalls), 1) == rsum, (section, noise, method)
            if section.startswith("MSCOCO 1K"):   # the release's slip, kept as published
                assert recalls[5] == recalls[2], (noise, method)


def test_readme_quotes_the_published_tables():
    sections = {"MSCOCO 5K": "MSCOCO 5K", "Flickr30K": "Flickr30K", "CC120K": "CC120K"}
    published = {(s.split(" (")[0], noise, method): cells
                 for s, rows in published_tables().items() for noise, method, *cells in rows}
    quoted = 0
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in sections:
            dataset, noise, clip_i2t, clip_t2i, clip_rsum, npc_i2t, npc_t2i, npc_rsum = cells
            for method, (i2t, t2i, rsum) in (("CLIP", (clip_i2t, clip_t2i, clip_rsum)),
                                             ("NPC", (npc_i2t, npc_t2i, npc_rsum))):
                row = published[(sections[dataset], noise, method)]
                assert (row[0], row[3], row[6]) == (i2t, t2i, rsum), (dataset, noise, method)
                quoted += 1
    assert quoted == 2 * 10


# Repository paths cited by the Python code (docstrings, comments, messages): the project's own folders,
# a file with an extension or a folder with a trailing slash. {a,b} groups are expanded (shell-style).
CITED_PATH = re.compile(r"(?<![\w/.-])((?:docs|bench|tests|npc|\.ci)/[\w./{},-]*[\w/}])")
CITED_SECTION = re.compile(r"(docs/[\w.-]+\.md),? sections? (\d+)")
CITED_EXT = ("py", "md", "json", "jsonl", "png", "sh", "txt", "yaml", "toml")
# Outputs the scripts create, not files of the repository.
GENERATED = ("bench/runs",)


def python_sources():
    skip = {".venv", ".git", "dataset", "logs", "pre-trained_models", "__pycache__"}
    return [p for p in sorted(REPO.rglob("*.py")) if not skip & set(p.relative_to(REPO).parts)
            and not any(p.relative_to(REPO).as_posix().startswith(g + "/") for g in GENERATED)]


def expand_braces(token: str):
    m = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    if not m:
        return [token]
    return [e for part in m.group(1).split(",")
            for e in expand_braces(token[:m.start()] + part + token[m.end():])]


def cited_paths(text: str):
    for token in CITED_PATH.findall(text):
        for path in expand_braces(token):
            if "{" in path or "}" in path or any(path == g or path.startswith(g + "/") for g in GENERATED):
                continue  # a format string or a generated folder
            if path.endswith("/") or path.rpartition(".")[2] in CITED_EXT and "/" in path:
                yield path


def test_python_sources_are_scanned():
    names = {p.relative_to(REPO).as_posix() for p in python_sources()}
    assert {"params.py", "npc/negative_impact.py", "bench/noisy_benchmark.py", "tests/test_docs.py"} <= names
    assert not any(n.startswith(".venv/") for n in names)
    b = "bench"  # spelt apart, so that the scan of this file does not find these made-up paths
    assert set(cited_paths(f"see {b}/results/x/y.{{json,md}} and npc/bank_loss, f'{b}/{{stem}}.md'")) == {
        f"{b}/results/x/y.json", f"{b}/results/x/y.md"}


def test_every_path_the_code_cites_exists():
    missing = []
    for source in python_sources():
        text = source.read_text(encoding="utf-8")
        for path in cited_paths(text):
            if not (REPO / path).exists():
                missing.append(f"{source.relative_to(REPO)}: {path}")
    assert not missing, "the code cites what does not exist:\n" + "\n".join(missing)


def test_the_sections_the_docs_and_code_cite_by_number_exist():
    """``docs/method.md section 5`` (code and docs) and ``method.md#5-...`` (links) name a numbered
    section that exists; the numbered sections of a page run 1, 2, 3, ... so a number names one."""
    texts = {p: p.read_text(encoding="utf-8") for p in python_sources() + DOCS}
    cited = [(src, doc, n) for src, text in texts.items() for doc, n in CITED_SECTION.findall(text)]
    assert cited, "nothing cites a section by number: this test checks nothing"
    for src, doc, n in cited:
        assert re.search(rf"^## {n}\. ", (REPO / doc).read_text(encoding="utf-8"), re.M), (src, doc, n)
    for doc in DOCS:
        numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", doc.read_text(encoding="utf-8"), re.M)]
        assert numbers == list(range(1, len(numbers) + 1)), doc.name


def test_readme_headline_table_is_the_benchmarks_record():
    """The README's benchmark table is the one ``bench/noisy_benchmark.py --render`` prints from
    bench/results/noisy_benchmark/noisy_benchmark.json: every recorded method (compositions with options
    included), rsum mean ± std per noise ratio, mean weight AUC at 40% and 60%."""
    import json

    from bench.noisy_benchmark import RESULTS, summary_table

    records = json.loads((RESULTS / "noisy_benchmark.json").read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = summary_table(records)
    assert table in readme, "README.md's benchmark table is not `python bench/noisy_benchmark.py --render`'s:\n" + table
    # a moved rsum, a moved weight AUC and a record of a method without a row each change the table
    i = next(i for i, r in enumerate(records) if r.get("weight_auc") is not None and r["noise_ratio"] == 0.6)
    for changed in ({"rsum": records[i]["rsum"] + 0.3}, {"weight_auc": records[i]["weight_auc"] + 0.01},
                    {"method": "npc_paper[bank_weight=0.3]"}):
        assert summary_table([*records[:i], {**records[i], **changed}, *records[i + 1:]]) not in readme, changed


def test_the_benchmark_page_tables_are_the_records():
    """docs/studies/benchmark.md's full table and per-seed table are what ``bench/noisy_benchmark.py --render``
    computes from the records, and a changed record changes them."""
    import json

    from bench.noisy_benchmark import RESULTS, full_table, per_seed_table

    records = json.loads((RESULTS / "noisy_benchmark.json").read_text(encoding="utf-8"))
    page = (REPO / "docs" / "studies" / "benchmark.md").read_text(encoding="utf-8")
    for name, make in (("full", lambda rs: "\n".join(full_table(rs))), ("per seed", per_seed_table)):
        assert make(records) in page, f"benchmark.md's {name} table is not the records':\n{make(records)}"
        i = next(i for i, r in enumerate(records) if r["method"] == "pclean_weight" and r["noise_ratio"] == 0.6)
        assert make([*records[:i], {**records[i], "rsum": records[i]["rsum"] + 0.3}, *records[i + 1:]]) not in page


def test_the_benchmark_records_are_whole():
    """Every benchmarked method (the benchmark-only oracles included) has 3 seeds at 40% and 60% noise and at
    each noise ratio it was ever benchmarked at, in the current records: the superseded file holds only history.
    (A registered method without records is not yet benchmarked: the README's table says so, see below.)"""
    import json

    from bench.noisy_benchmark import RESULTS
    from npc.methods import METHODS

    records = json.loads((RESULTS / "noisy_benchmark.json").read_text(encoding="utf-8"))
    superseded = json.loads((RESULTS / "noisy_benchmark_superseded.json").read_text(encoding="utf-8"))
    seeds = {}
    for r in records:
        seeds.setdefault((r["method"], r["noise_ratio"]), set()).add(r["seed"])
    benchmarked = [m for m in METHODS if any(r["method"] == m for r in records)]
    wanted = {(r["method"], r["noise_ratio"]) for r in superseded} | {(m, n) for m in benchmarked for n in (0.4, 0.6)}
    missing = sorted(f"{m} at {n:.0%}: seeds {sorted(seeds.get((m, n), ()))}" for m, n in wanted
                     if seeds.get((m, n), set()) != {0, 1, 2})
    assert not missing, missing


def test_a_registered_method_without_records_is_shown_as_not_yet_benchmarked():
    """A new method lands without benchmark runs: the README's table gives it a row that says so (and the
    records' test above asks nothing of it); its first records replace that row."""
    import json

    from bench.noisy_benchmark import RESULTS, summary_table
    from npc import methods

    records = json.loads((RESULTS / "noisy_benchmark.json").read_text(encoding="utf-8"))
    methods.register_method(methods.Method("toy_unbenchmarked", "clip", None, "clip", summary="a toy"))
    try:
        table = summary_table(records)
        row = next(line for line in table.splitlines() if line.startswith("| toy_unbenchmarked |"))
        assert "not yet benchmarked" in row and row.count("|") == table.splitlines()[0].count("|")
        first = [{**r, "method": "toy_unbenchmarked"} for r in records if r["method"] == "clip"]
        assert "not yet benchmarked" not in summary_table(records + first)
    finally:
        methods.METHODS.unregister("toy_unbenchmarked")
    assert "not yet benchmarked" not in summary_table(records)  # every registered method has records today
