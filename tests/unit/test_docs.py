"""The README's configuration table documents every setting the code reads, with the
code's default."""

from __future__ import annotations

import re
from pathlib import Path

from omi_receiver.runtime.config import DEFAULTS, ENV_VARS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _table() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", README, flags=re.M)
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
