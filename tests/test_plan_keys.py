"""The keys table (protocol/plan_keys.py) is the one home of every plan key: the readers accept
exactly its keys, the config dataclasses hold its defaults, and docs/plan.md shows it."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import REPO

from introspectd.errors import BadInput
from introspectd.protocol import plan_keys
from introspectd.protocol.plan import Plan, parse_plan

BEGIN, END = plan_keys.DOCS_BEGIN, plan_keys.DOCS_END


def _config_fields() -> dict[tuple[str, str], object]:
    plan = Plan(path="x.toml")
    fields = {}
    for section in plan_keys.SECTIONS:
        if section in ("mentions", "prompts"):  # tables of free names, not keys
            continue
        config = getattr(plan, section)
        for f in dataclasses.fields(config):
            if (section, f.name) != ("sweep", "custom_prompts"):  # the [prompts] tables
                fields[(section, f.name)] = getattr(config, f.name)
    return fields


def test_the_table_names_exactly_the_config_fields() -> None:
    table = {(k.section, k.name) for k in plan_keys.KEYS}
    assert table == set(_config_fields())


def test_defaults_come_from_the_table() -> None:
    for (section, name), value in _config_fields().items():
        if (section, name) in {("run", "experiment_id"), ("model", "max_memory")}:
            continue  # held as None / () where the plan writes "" / {}: said in the dataclass
        assert value == plan_keys.default(section, name), (section, name)


@pytest.mark.parametrize("spec", plan_keys.KEYS, ids=lambda k: f"{k.section}.{k.name}")
def test_every_key_is_read(spec: plan_keys.Key) -> None:
    """Writing a key's default back into a plan is accepted (the reader knows the key) and
    yields that default; a misspelling is refused with a suggestion of the real name."""
    value = spec.default if spec.name != "experiment_id" else "named"
    data: dict[str, dict[str, object]] = {spec.section: {spec.name: value}}
    if (spec.section, spec.name) == ("model", "max_memory"):
        data = {"model": {"device_map": "auto", "max_memory": {"cpu": "1GiB"}}}
    if (spec.section, spec.name) == ("model", "gguf_file"):
        data = {"model": {"gguf_file": "x.gguf"}}
    parse_plan(data, "p.toml")
    typo = spec.name[:-1] + ("x" if spec.name[-1] != "x" else "y")
    with pytest.raises(BadInput, match=f"unknown key \\(did you mean '{spec.name}'\\?"):
        parse_plan({spec.section: {typo: value}}, "p.toml")


def test_an_unknown_table_is_refused_with_a_suggestion() -> None:
    with pytest.raises(BadInput, match=r"p.toml: sweeps: unknown key \(did you mean 'sweep'\?"):
        parse_plan({"sweeps": {}}, "p.toml")


def test_docs_plan_shows_the_table() -> None:
    """docs/plan.md's key table is the generated one (`make docs` rewrites it)."""
    page = (REPO / "docs" / "plan.md").read_text()
    assert BEGIN in page and END in page, "docs/plan.md lacks the plan-keys markers"
    shown = page.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == plan_keys.markdown_table().strip(), "run `make docs` to refresh docs/plan.md"
    for spec in plan_keys.KEYS:
        assert f"| `{spec.name}` |" in shown
