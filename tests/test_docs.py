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
