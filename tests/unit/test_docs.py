"""The docs agree with the repo: README's configuration table documents every setting the
code reads, with the code's default; every relative link and every cited `docs/...` path
resolves; and no file points outside the repository."""

from __future__ import annotations

import fnmatch
import functools
import json
import math
import os
import re
import subprocess
from pathlib import Path

from omi_receiver.runtime.config import DEFAULTS, ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _table() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", README, flags=re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def test_every_env_var_is_in_the_readme_with_its_default():
    table = _table()
    assert set(ENV_VARS) <= set(table), set(ENV_VARS) - set(table)
    for name in ENV_VARS:
        default = DEFAULTS[name]
        if default == "":  # a required setting, or an optional one whose absence means "all"
            assert "required" in table[name] or "empty" in table[name], name
        else:
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            assert table[name].strip("`") == shown, (name, table[name], default)


# --- The repo stands alone: links resolve, cited docs exist, nothing points outside ---------

# Names of files outside the repository that code and docs used to cite, and absolute paths of
# a machine. Spelt in pieces so that this file passes its own check.
OUTSIDE = [
    (r"(?<![\w.-])(?:\.\./)+shared/", "a sibling folder of the repository"),
    (r"(?<![\w./-])shared/[A-Z][\w-]*\.md", "a file in a shared folder outside the repository"),
    (r"OMI-SENDER" + r"\.md", "the old sender notes: cite docs/omi-sender.md"),
    (r"(?<![\w-])COSTS" + r"\.md", "the old price sheet: cite docs/prices.md"),
    (r"(?<![\w.~-])/(?:work|tmp|home|Users|root|mnt|srv|opt|workspace)/", "an absolute path of a machine"),
]
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w.-]+(?:/[\w.-]+)*")
# (README, "Scaling to many users"), docs/deploy.md, "Tear down"; HCL strings escape the quotes.
SECTION_REF = re.compile(r'(README(?:\.md)?|docs/[\w.-]+\.md),? \\?"([^"\\]+)\\?"')
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _ignored_by_gitignore() -> list[str]:
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.rstrip("/")
        if "/" in bare:  # anchored at the root: the path or one of its parent folders
            if any(fnmatch.fnmatch("/".join(parts[:i]), bare) for i in range(1, len(parts) + 1)):
                return True
        elif any(fnmatch.fnmatch(part, bare) for part in parts):
            return True
    return False


def _ignores_itself(folder: Path) -> bool:
    """Tool caches (.ruff_cache, ...) keep out of git with a .gitignore holding `*`."""
    ignore = folder / ".gitignore"
    return ignore.is_file() and "*" in ignore.read_text().split()


@functools.cache
def _repo_files() -> tuple[str, ...]:
    """The repository's files, relative to its root: git's list (tracked plus new files not
    ignored) in a checkout; elsewhere (Cloud Build uploads the tree without .git) a walk that
    skips what .gitignore names."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        names = out.splitlines()
    except (OSError, subprocess.CalledProcessError):
        patterns = [*_ignored_by_gitignore(), ".git"]
        names = []
        for folder, subfolders, files in os.walk(ROOT):
            here = Path(folder)
            if here != ROOT and _ignores_itself(here):
                subfolders.clear()
                continue
            names += [(here / name).relative_to(ROOT).as_posix() for name in files]
        names = [n for n in names if not _ignored(n, patterns)]
    return tuple(sorted(n for n in names if (ROOT / n).is_file()))


@functools.cache
def _text(rel: str) -> str | None:
    data = (ROOT / rel).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text_files() -> list[tuple[str, str]]:
    return [(rel, text) for rel in _repo_files() if (text := _text(rel)) is not None]


def _outside_fences(markdown: str) -> list[tuple[int, str]]:
    """Numbered lines that are not in a fenced code block (a shell comment is no heading)."""
    lines, fence = [], None
    for number, line in enumerate(markdown.splitlines(), 1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened.group(1) == fence:
                fence = None
        elif opened:
            fence = opened.group(1)
        else:
            lines.append((number, line))
    return lines


def _prose_lines(markdown: str) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code spans blanked."""
    return [(number, re.sub(r"(`+).*?\1", "", line)) for number, line in _outside_fences(markdown)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped (letters,
    digits, `_`, `-` and spaces stay), spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


@functools.cache
def _headings(rel: str) -> tuple[str, ...]:
    found = (re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line) for _, line in _outside_fences(_text(rel) or ""))
    return tuple(heading.group(1) for heading in found if heading)


@functools.cache
def _anchors(rel: str) -> frozenset[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _headings(rel):
        slug = _slug(heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return frozenset(anchors)


def _plain(title: str) -> str:
    return title.replace("`", "").strip().lower()


@functools.cache
def _section_titles(rel: str) -> frozenset[str]:
    """What a citation can name: the headings, and the bold labels that open a paragraph or a
    list item (design.md's "**A pass that died holding chunks.** ...")."""
    if not (ROOT / rel).is_file():
        return frozenset()
    labels = (re.match(r"^\s*(?:[*-]\s+)?\*\*(.+?)[.:]?\*\*", line) for _, line in _outside_fences(_text(rel) or ""))
    return frozenset(_plain(t) for t in [*_headings(rel), *(label.group(1) for label in labels if label)])


def test_the_link_checks_read_markdown_as_github_does():
    assert _slug("Order, late chunks and the settle window") == "order-late-chunks-and-the-settle-window"
    assert _slug("Changing `assembler_shards`") == "changing-assembler_shards"
    assert _slug("Finding, fetching and erasing audio") == "finding-fetching-and-erasing-audio"
    assert _prose_lines("a\n```sh\n# not a heading [x](nowhere)\n```\nb `[y](z)` c") == [(1, "a"), (5, "b  c")]
    assert "a pass that died holding chunks" in _section_titles("docs/design.md")
    assert _ignored("bench/results/tmp/x.json", ["bench/results/tmp/"])
    assert _ignored("omi_receiver/__pycache__/a.pyc", ["__pycache__/"])
    assert not _ignored("docs/design.md", _ignored_by_gitignore())


def test_every_relative_link_in_the_docs_resolves():
    """Every link in README.md, docs/ and any other Markdown file of the repo that is not a
    URL names a file or folder of the repo, and its #anchor a heading of that file."""
    broken = []
    markdown = [rel for rel in _repo_files() if rel.endswith(".md")]
    assert "README.md" in markdown and "docs/design.md" in markdown
    for rel in markdown:
        for number, line in _prose_lines(_text(rel) or ""):
            for target in LINK.findall(line):
                if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):  # https:, mailto:
                    continue
                path, _, anchor = target.partition("#")
                resolved = (ROOT / rel).parent / path if path else ROOT / rel
                resolved = resolved.resolve()
                where = f"{rel}:{number}: {target}"
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    broken.append(f"{where} (no such file in the repo)")
                elif (
                    anchor
                    and resolved.suffix == ".md"
                    and anchor not in _anchors(resolved.relative_to(ROOT).as_posix())
                ):
                    broken.append(f"{where} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_every_cited_docs_path_and_section_exists():
    """A `docs/...` path named anywhere (code, Terraform, YAML, Makefile, docs) exists, and a
    section cited by name (README or a file under docs/, a comma, its title in double quotes)
    is a heading or a bold paragraph label of that file."""
    missing = []
    for rel, text in _text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for cited in DOCS_PATH.findall(line):
                cited = cited.rstrip(".")
                if not (ROOT / cited).exists():
                    missing.append(f"{rel}:{number}: {cited}")
            for doc, title in SECTION_REF.findall(line):
                doc = "README.md" if doc.startswith("README") else doc
                if _plain(title) not in _section_titles(doc):
                    missing.append(f'{rel}:{number}: {doc}, "{title}" (no such heading or bold label)')
    assert not missing, "\n".join(missing)


def test_no_file_names_a_path_outside_the_repo():
    """The facts the code relies on live in the repo (docs/omi-sender.md, docs/prices.md); no
    file points to a sibling folder, a machine's absolute path or the old outside notes."""
    found = []
    patterns = [(re.compile(p), why) for p, why in OUTSIDE]
    for rel, text in _text_files():
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, why in patterns:
                match = pattern.search(line)
                if match:
                    found.append(f"{rel}:{number}: {match.group(0)!r}: {why}")
    assert not found, "\n".join(found)


def _listed_prices() -> dict[str, float]:
    """docs/prices.md's rows that name a `PRICE` key: key -> USD per unit."""
    per = {"1,000": 1e3, "10,000": 1e4, "million": 1e6}
    prices = {}
    for row in re.findall(r"^\|[^|]*\|([^|]*)\| `(\w+)` \|", (ROOT / "docs/prices.md").read_text(), flags=re.MULTILINE):
        amount = re.search(r"\$([\d.]+)(?: per (1,000|10,000|million)\b)?", row[0])
        assert amount, row
        prices[row[1]] = float(amount.group(1)) / per.get(amount.group(2), 1)
    return prices


def test_the_cost_model_uses_the_prices_in_docs():
    """bench/cost.py's PRICE is docs/prices.md's table, so the generated cost.md and the dated
    price list cannot drift apart."""
    from bench.cost import PRICE

    listed = _listed_prices()
    assert set(listed) == set(PRICE)
    for key, price in PRICE.items():
        assert math.isclose(listed[key], price, rel_tol=1e-9), (key, listed[key], price)
    assert re.search(
        r"late 2026.*verify before quoting", (ROOT / "docs/prices.md").read_text(), re.IGNORECASE | re.DOTALL
    )


def test_readme_sizing_costs_are_the_committed_cost_model():
    """README's Sizing table quotes what `make bench` computed for each size (bench/results/cost.json):
    a bench run that moves a number must move the README with it."""
    data = json.loads((ROOT / "bench" / "results" / "cost.json").read_text())["sizes"]
    section = (ROOT / "README.md").read_text().split("### Sizing", 1)[1].split("\n#", 1)[0]
    for size, values in data.items():
        [row] = [line for line in section.splitlines() if line.startswith(f"| {size}")]
        hour = values.get("per_user_hour_1_user", values.get("per_user_hour_10000_users"))
        assert f"${hour:.4f} per user-hour" in row, (size, row)
        assert f"${values['idle_month']:.2f} a month idle" in row, (size, row)
