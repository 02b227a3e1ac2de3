"""The functions' source zips as Terraform would build them, listed without Terraform.

infra/ builds each zip as a `data "archive_file"` with one dynamic `source` block per file
of an allow-list: `local.<name>.files`, fileset() globs relative to `local.<name>.dir`.
`zip_files(data_name)` reads that from the parsed HCL (python-hcl2), checks the block has
exactly that shape (anything else would need a new reader here), and evaluates the globs
against the repository as fileset() does: the name each file has in the zip, mapped to the
file it is read from. `extract(data_name, into)` writes that tree to a folder.

fileset() matches with doublestar: `*` and `?` stay within one path segment, `**` spans
segments and `**/` also matches no folder at all; only regular files are returned. The
allow-lists use only those; a pattern with `[`, `{` or `\\` is refused here.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"

FOR_EACH = re.compile(
    r"\$\{toset\(flatten\(\[for (?P<var>\w+) in local\.(?P<local>\w+)\.files : "
    r"fileset\(local\.(?P=local)\.dir, (?P=var)\)\]\)\)\}"
)


def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _norm(obj):
    if isinstance(obj, dict):
        return {_unquote(k): _norm(v) for k, v in obj.items() if not str(k).startswith("__")}
    if isinstance(obj, list):
        return [_norm(v) for v in obj]
    return _unquote(obj)


@functools.cache
def _infra() -> tuple[dict, dict]:
    """(data blocks by (type, name), locals) of infra/*.tf."""
    data, local = {}, {}
    for path in sorted(INFRA.glob("*.tf")):
        with path.open() as fh:
            doc = _norm(hcl2.load(fh))
        for block in doc.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    data[(dtype, name)] = body
        for block in doc.get("locals", []):
            local.update(block)
    return data, local


def archive(data_name: str) -> dict:
    data, _ = _infra()
    body = data.get(("archive_file", data_name))
    assert body is not None, f"infra/ declares no data.archive_file.{data_name}"
    return body


def allow_list(data_name: str) -> tuple[str, Path, list[str]]:
    """(local name, folder, globs) of the archive's allow-list, after checking that the
    archive is built from it and from nothing else."""
    body = archive(data_name)
    other_sources = {"source_dir", "source_file", "source_content", "source_content_filename", "excludes"}
    assert not other_sources & set(body), f"archive_file.{data_name} must take its files from the allow-list only"
    assert body["type"] == "zip"
    [dynamic] = body["dynamic"]
    [(label, source)] = dynamic.items()
    assert label == "source" and set(source) == {"for_each", "content"}, source
    m = FOR_EACH.fullmatch(source["for_each"])
    assert m, f"unexpected for_each {source['for_each']!r}: tests/source_zips.py reads one shape only"
    name = m["local"]
    [content] = source["content"]
    assert content == {
        "filename": "${source.value}",
        "content": f'${{file("${{local.{name}.dir}}/${{source.value}}")}}',
    }, content
    _, local = _infra()
    spec = local[name]
    assert set(spec) == {"dir", "files"}, spec
    folder = spec["dir"]
    assert folder.startswith("${path.module}/"), folder
    folder = (INFRA / folder.removeprefix("${path.module}/")).resolve()
    return name, folder, list(spec["files"])


def glob_regex(pattern: str) -> re.Pattern:
    """A fileset() glob as a regular expression over slash-separated relative paths."""
    assert not re.search(r"[\[\]{}\\]", pattern), f"{pattern!r}: only *, ** and ? are understood here"
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:[^/]+/)*", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def fileset(folder: Path, pattern: str) -> set[str]:
    """fileset(folder, pattern): the regular files under `folder` matching `pattern`, as
    slash-separated paths relative to it. Walks only what the pattern can reach."""
    if not re.search(r"[*?]", pattern):
        return {pattern} if (folder / pattern).is_file() else set()
    literal_dir = re.split(r"[*?]", pattern, maxsplit=1)[0].rpartition("/")[0]
    # Without `**`, a match is exactly as deep as the pattern.
    depth = None if "**" in pattern else pattern.count("/") - (literal_dir.count("/") + 1 if literal_dir else 0)
    regex = glob_regex(pattern)
    start = folder / literal_dir
    found = set()
    for dirpath, dirnames, filenames in os.walk(start):
        if depth is not None and len(Path(dirpath).relative_to(start).parts) >= depth:
            dirnames.clear()
        for f in filenames:
            path = Path(dirpath, f)
            rel = path.relative_to(folder).as_posix()
            if regex.match(rel) and path.is_file():
                found.add(rel)
    return found


def zip_files(data_name: str) -> dict[str, Path]:
    """Name in the zip -> file it is read from, for data.archive_file.<data_name>."""
    _, folder, globs = allow_list(data_name)
    return {rel: folder / rel for glob in globs for rel in sorted(fileset(folder, glob))}


def empty_globs(data_name: str) -> list[str]:
    """The allow-list's globs that match no file (the archive's precondition refuses them)."""
    _, folder, globs = allow_list(data_name)
    return [glob for glob in globs if not fileset(folder, glob)]


def extract(data_name: str, into: Path) -> Path:
    """Write the zip's files under `into`, as the function's build would unpack them."""
    for rel, path in zip_files(data_name).items():
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, into / rel)
    return into
