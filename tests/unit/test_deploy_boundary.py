"""The deploy boundary: what each function's zip holds is all it imports, and it imports
only what it needs.

Each zip is unpacked as Terraform would build it (tests/source_zips.py reads the allow-list
in infra/) and its main.py imported in a fresh interpreter from there. Ingest and the
assembler load no webrtcvad and no ops or devtools code, and take every receiver module
from the zip itself (nothing from the repository through the editable install); the VAD
example loads no receiver code at all. Every distribution a zip loads must be installed by
its own requirements.txt (the pins and what they depend on), which is all the Cloud
Functions build installs.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import source_zips
from packaging.requirements import Requirement

# Run with -I (no PYTHONPATH, no user site, no current folder on sys.path): the zip's
# folder is put first by hand, as the functions framework puts the source folder. Modules of
# distributions the requirements do not install are made to look absent, as they are in
# the deployed function: an optional import (google.api_core tries grpc) then takes its
# fallback, and a required one fails the test with the module's name.
IMPORT_MAIN = """
import importlib.machinery, json, os, sys
ABSENT = set(json.loads(open(sys.argv[1]).read()))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.origin and os.path.realpath(spec.origin) in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by requirements.txt)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.path.insert(0, os.getcwd())
before = set(sys.modules)
import main
print(json.dumps({name: getattr(module, "__file__", None)
                  for name, module in sys.modules.items() if name not in before}))
"""


def import_main(folder: Path, requirements: Path, tmp_path: Path) -> dict[str, str | None]:
    """Modules `import main` loads in a fresh interpreter run in `folder` with only what
    `requirements` installs: name -> file."""
    allowed = installed_by(requirements)
    absent = tmp_path / "absent.json"
    # The folder's own files are the source, not an installed package (an editable install's
    # egg-info lists them).
    here = Path(os.path.realpath(folder))
    absent.write_text(
        json.dumps(
            sorted(
                str(path)
                for path, dist in installed_files().items()
                if dist not in allowed and not path.is_relative_to(here)
            )
        )
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", IMPORT_MAIN, str(absent)], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@functools.cache
def installed_files() -> dict[Path, str]:
    """Every installed distribution's modules (.py, .so): real path -> distribution name."""
    out = {}
    for dist in metadata.distributions():
        base = os.path.realpath(dist.locate_file(""))
        for f in dist.files or ():
            if f.suffix in (".py", ".so"):
                out[Path(os.path.normpath(os.path.join(base, f)))] = normalize(dist.metadata["Name"])
    return out


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_by(requirements: Path) -> set[str]:
    """Distributions `pip install -r requirements` installs here: the pins and, through
    their metadata, everything they depend on (with extras and environment markers)."""
    pending = [
        Requirement(line.split("#", 1)[0].strip())
        for line in requirements.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    seen: set[tuple[str, frozenset]] = set()
    while pending:
        req = pending.pop()
        key = (normalize(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        environments = [{"extra": extra} for extra in req.extras] or [{"extra": ""}]
        for text in dist.requires or ():
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate(env) for env in environments):
                pending.append(dep)
    return {name for name, _ in seen}


def distributions_loaded(modules: dict[str, str | None]) -> set[str]:
    files = installed_files()
    paths = (Path(os.path.realpath(f)) for f in modules.values() if f)
    return {files[path] for path in paths if path in files}


@pytest.fixture(scope="module")
def functions_zip(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    folder = source_zips.extract("src", tmp_path_factory.mktemp("functions-zip"))
    return folder, import_main(folder, folder / "requirements.txt", tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def vad_zip(tmp_path_factory) -> tuple[Path, dict[str, str | None]]:
    folder = source_zips.extract("vad", tmp_path_factory.mktemp("vad-zip"))
    return folder, import_main(folder, folder / "requirements.txt", tmp_path_factory.mktemp("run"))


def webrtcvad_or_example(modules) -> list[str]:
    return [m for m in modules if m.split(".")[0] in ("webrtcvad", "_webrtcvad", "vad_consumer")]


def ops_or_devtools(modules) -> list[str]:
    return [m for m in modules if m.startswith(("omi_receiver.ops", "omi_receiver.devtools"))]


@pytest.mark.slow
def test_importing_main_loads_neither_webrtcvad_nor_ops_nor_devtools(functions_zip):
    folder, modules = functions_zip
    assert "omi_receiver.runtime.ingest" in modules and "omi_receiver.runtime.assembler" in modules
    assert webrtcvad_or_example(modules) == [] and ops_or_devtools(modules) == []
    # Every receiver module came from the zip: it holds all that main.py needs.
    ours = {m: f for m, f in modules.items() if m == "main" or m.startswith("omi_receiver")}
    assert all(f and Path(f).is_relative_to(folder) for f in ours.values()), ours


def test_importing_main_in_the_repository_loads_neither_webrtcvad_nor_ops_nor_devtools(tmp_path):
    """As functions-framework loads it locally (`--source main.py`: the local stack)."""
    modules = import_main(source_zips.REPO, source_zips.REPO / "requirements.txt", tmp_path)
    assert "main" in modules and "omi_receiver.runtime" in modules
    assert webrtcvad_or_example(modules) == [] and ops_or_devtools(modules) == []


def test_the_functions_zip_loads_its_three_pins(functions_zip):
    loaded = distributions_loaded(functions_zip[1])
    assert {"functions-framework", "google-cloud-pubsub", "google-cloud-storage"} <= loaded
    assert "webrtcvad-wheels" not in loaded


def test_the_vad_zip_stands_alone(vad_zip):
    """Importable from its three files with only its own requirements installed."""
    folder, modules = vad_zip
    assert "vad_consumer" in modules and "webrtcvad" in modules
    assert [m for m in modules if m.split(".")[0] == "omi_receiver"] == [], "the example imports the receiver"
    assert Path(modules["vad_consumer"]).is_relative_to(folder)
    loaded = distributions_loaded(modules)
    assert {"functions-framework", "google-cloud-storage", "webrtcvad-wheels"} <= loaded
    assert "google-cloud-pubsub" not in loaded
