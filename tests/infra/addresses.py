"""The resource instances a configuration declares, as Terraform's state names them.

`instance_addresses(infra_dir, variables)` expands count and for_each with the given
variables (the rest at their defaults): `google_pubsub_topic.chunks[0]`,
`google_service_account.this["ingest"]`, `google_storage_bucket.recordings`. Data sources
are left out (a plan reads them again; nothing moves). `moves(infra_dir)` lists the
`moved` blocks as (from, to) address pairs.

tests/infra/test_upgrade.py uses both: every instance a deployment made with an earlier
infra/ holds must still be declared, or be moved by a `moved` block, or be listed as
replaced on purpose. Otherwise `terraform apply` would destroy it and create another.
"""

from __future__ import annotations

import json
from pathlib import Path

import hcl_eval
import tf_config


def instance_addresses(infra_dir: Path, variables: dict) -> set[str]:
    config = tf_config.load(infra_dir)
    resolver = tf_config.ConfigResolver(config, variables)
    evaluator = resolver.evaluator()
    found: set[str] = set()
    for (rtype, name), block in config.resources.items():
        base = f"{rtype}.{name}"
        if "count" in block.attributes:
            count = evaluator.eval(block.attributes["count"].expr)
            _known(count, base)
            found |= {f"{base}[{i}]" for i in range(int(count))}
        elif "for_each" in block.attributes:
            keys = evaluator.eval(block.attributes["for_each"].expr)
            _known(keys, base)
            keys = keys.keys() if isinstance(keys, dict) else keys
            found |= {f"{base}[{json.dumps(str(k))}]" for k in keys}
        else:
            found.add(base)
    return found


def moves(infra_dir: Path) -> list[tuple[str, str]]:
    config = tf_config.load(infra_dir)
    return [
        (_address_text(block.attributes["from"]), _address_text(block.attributes["to"]))
        for block in config.blocks
        if block.type == "moved"
    ]


def _address_text(attr) -> str:
    """A moved block's address as Terraform prints it: `a.b["k"]` or `a.b[0]`."""
    return "".join(attr.src.split())


def _known(value, what: str) -> None:
    if isinstance(value, hcl_eval.Unknown):
        raise AssertionError(f"{what}: count/for_each is not known at plan time with these variables ({value})")
