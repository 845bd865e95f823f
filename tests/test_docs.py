"""The README and docs/ refer only to files inside the repository, and the published numbers agree."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PUBLISHED = REPO / "docs" / "published_results.md"

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# A repository file named in inline code: a relative path with a folder and a file extension.
CODE_PATH = re.compile(r"^[\w.-]+(?:/[\w.-]+)+\.(?:py|md|json|jsonl|png|sh|txt|yaml|toml)$")
# Folders whose files are the user's (weights, runs), not the repository's.
USER_FOLDERS = ("pre-trained_models", "logs")


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path):
    return {github_anchor(m) for m in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)}


def inside_repo(base: Path, target: str) -> Path:
    path = (base / target).resolve()
    assert path.is_relative_to(REPO), f"{target} points outside the repository"
    assert path.exists(), f"{target} does not exist in the repository"
    return path


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve_inside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    links = LINK.findall(text)
    for target in links:
        if re.match(r"https?://", target):   # citations of other projects on the web
            continue
        file, _, fragment = target.partition("#")
        path = inside_repo(doc.parent, file) if file else doc
        if fragment:
            assert fragment in anchors(path), f"{doc.name}: no heading #{fragment} in {path.name}"
    # Every markdown file named anywhere, and every repository path in inline code, exists here.
    for name in set(re.findall(r"[\w./-]*\w\.md\b", text)):
        inside_repo(REPO, name) if "/" in name else inside_repo(doc.parent, name)
    for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
        for token in span.split():
            if CODE_PATH.match(token) and token.split("/")[0] not in USER_FOLDERS:
                inside_repo(REPO, token)


def test_the_readme_links_its_published_numbers():
    readme = REPO / "README.md"
    assert "docs/published_results.md" in LINK.findall(readme.read_text(encoding="utf-8"))


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
    assert len(tables) == 4 and sum(len(rows) for rows in tables.values()) == 10 + 10 + 8 + 2
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
        for doc, section in CITED_SECTION.findall(text):
            target = REPO / doc
            if not target.is_file():
                missing.append(f"{source.relative_to(REPO)}: {doc}")
            elif not re.search(rf"^## {section}\. ", target.read_text(encoding="utf-8"), re.M):
                missing.append(f"{source.relative_to(REPO)}: {doc} has no section '## {section}.'")
    assert not missing, "the code cites what does not exist:\n" + "\n".join(missing)


def test_the_readme_is_a_short_manual():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines: move the depth into docs/"
    text = "\n".join(lines)
    for page in ("docs/method.md", "docs/methods.md", "docs/running.md", "docs/failure.md", "docs/evaluation.md",
                 "docs/demo.md", "docs/benchmark.md", "docs/estimator_study.md", "docs/throughput.md",
                 "docs/own_data.md"):
        assert f"]({page}" in text, f"README.md does not link {page}"


def test_method_page_has_the_sections_the_code_cites():
    headings = re.findall(r"^## (\d+)\. ", (REPO / "docs" / "method.md").read_text(encoding="utf-8"), re.M)
    assert headings == [str(n) for n in range(1, 8)]


def test_readme_headline_table_is_the_benchmarks_record():
    """The README's rsum table is computed from bench/results/noisy_benchmark/noisy_benchmark.json."""
    import json
    import statistics

    records = json.loads((REPO / "bench/results/noisy_benchmark/noisy_benchmark.json").read_text())

    def mean_std(values):
        return (values[0], 0.0) if len(values) == 1 else (statistics.fmean(values), statistics.stdev(values))

    rows = 0
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 6 or not any(r["method"] == cells[0] for r in records):
            continue
        method, *rsums, auc = cells
        for noise, cell in zip((0.0, 0.2, 0.4, 0.6), rsums):
            values = [r["rsum"] for r in records if r["method"] == method and r["noise_ratio"] == noise]
            assert cell == ("{:.1f} ± {:.1f}".format(*mean_std(values)) if values else "–"), (method, noise)
        aucs = [r["weight_auc"] for r in records
                if r["method"] == method and r["noise_ratio"] == 0.4 and r.get("weight_auc") is not None]
        assert auc == (f"{statistics.fmean(aucs):.3f}" if aucs else "–"), method
        rows += 1
    assert rows == len({r["method"] for r in records})
