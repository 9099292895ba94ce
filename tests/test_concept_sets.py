"""Concept sets, word files, baselines, chat templates and vectors files as the plan reads them:
expanded at load time, refused in one line, and absent from the hash at their defaults."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from introspectd.errors import BadInput
from introspectd.protocol import plan_checks
from introspectd.protocol.chat_templates import PLAIN_TEMPLATE
from introspectd.protocol.concept_sets import LINDSEY50, SEED_CONCEPTS
from introspectd.protocol.plan import load_plan, parse_plan, spec_hash
from introspectd.protocol.prompts import BASELINE_WORDS
from introspectd.protocol.user_vectors import VectorFile

SMALL = {"concepts": ["ocean", "fear"], "layers": [1, 3], "strengths": [2.0, 4.0], "trials": 2}


def _sweep(**sweep: Any) -> Any:
    return parse_plan({"model": {"name": "builtin:tiny"}, "sweep": sweep}, "p.toml")


def test_existing_plans_keep_their_hash() -> None:
    """Pinned from the code before these keys existed: their defaults are left out."""
    assert spec_hash(_sweep(**SMALL).generation_spec()) == "a552090232a3a869"
    assert spec_hash(parse_plan({}, "p.toml").generation_spec()) == "f91d8ae2e8e0293f"
    defaults = {"concepts_file": "", "baseline_words": [], "baseline_file": "", "vectors_file": ""}
    written = _sweep(**SMALL, **defaults)
    assert spec_hash(written.generation_spec()) == "a552090232a3a869"


def test_the_seed_set_is_the_default_list_and_hashes_the_same() -> None:
    seed = parse_plan({"sweep": {"concepts": "seed"}}, "p.toml")
    assert seed.sweep.concepts == SEED_CONCEPTS
    assert spec_hash(seed.generation_spec()) == "f91d8ae2e8e0293f"


def test_lindsey50_is_fifty_valid_distinct_words_apart_from_the_baseline() -> None:
    plan = parse_plan({"sweep": {"concepts": "lindsey50", "trials": 1}}, "p.toml")
    assert plan.sweep.concepts == LINDSEY50 and len(set(LINDSEY50)) == 50
    assert all(plan_checks.CONCEPT_RE.fullmatch(w) for w in LINDSEY50)
    assert not set(LINDSEY50) & set(BASELINE_WORDS)


def test_an_unknown_set_names_the_known_ones() -> None:
    with pytest.raises(BadInput, match=r"p.toml: \[sweep\] concepts: unknown concept set 'x'"):
        _sweep(concepts="x")


def test_a_concepts_file_is_read_from_the_plans_directory(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("# my concepts\nocean\n\n  fear  \n")
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text('[sweep]\nconcepts_file = "words.txt"\n')
    plan = load_plan(plan_file)
    assert plan.sweep.concepts == ("ocean", "fear")
    listed = _sweep(concepts=["ocean", "fear"])
    assert plan.generation_spec()["sweep"] == listed.generation_spec()["sweep"]


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("ocean\nOcean!\n", "must be a lowercase word"),
        ("ocean\nocean\n", "duplicate concept 'ocean'"),
        ("# nothing\n", "must name at least one concept"),
    ],
)
def test_a_bad_concepts_file_is_one_line(tmp_path: Path, text: str, fault: str) -> None:
    (tmp_path / "words.txt").write_text(text)
    with pytest.raises(BadInput, match=rf"\[sweep\] concepts_file: .*{fault}") as caught:
        parse_plan({"sweep": {"concepts_file": str(tmp_path / "words.txt")}}, "p.toml")
    assert "\n" not in str(caught.value)


def test_concepts_and_concepts_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="give concepts or concepts_file, not both"):
        _sweep(concepts=["ocean"], concepts_file="words.txt")
    with pytest.raises(BadInput, match=r"concepts_file: .*nowhere.txt: file not found"):
        _sweep(concepts_file=str(tmp_path / "nowhere.txt"))


def test_baseline_words_replace_the_built_in_list_and_enter_the_hash(tmp_path: Path) -> None:
    plan = _sweep(**SMALL, baseline_words=["table", "river", "justice"])
    assert plan.sweep.baseline_words == ("table", "river", "justice")
    assert list(plan.generation_spec()["sweep"]["baseline_words"]) == ["table", "river", "justice"]
    (tmp_path / "base.txt").write_text("table\nriver\njustice\n")
    from_file = _sweep(**SMALL, baseline_file=str(tmp_path / "base.txt"))
    assert spec_hash(from_file.generation_spec()) == spec_hash(plan.generation_spec())


def test_a_baseline_holding_a_concept_or_given_twice_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"baseline_words: 'ocean' is also a concept"):
        _sweep(**SMALL, baseline_words=["table", "ocean"])
    with pytest.raises(BadInput, match="give baseline_words or baseline_file, not both"):
        _sweep(**SMALL, baseline_words=["table"], baseline_file="b.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(BadInput, match="holds no words"):
        _sweep(**SMALL, baseline_file=str(tmp_path / "empty.txt"))


def test_a_chat_template_is_checked_and_decides_the_hash() -> None:
    def model(template: str) -> Any:
        return parse_plan({"model": {"name": "builtin:tiny", "chat_template": template}}, "p")

    plain = model("plain")
    assert plain.generation_spec()["model"]["chat_template"] == "plain"
    assert "chat_template" not in model("").generation_spec()["model"]
    own = model("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert spec_hash(own.generation_spec()) != spec_hash(plain.generation_spec())
    with pytest.raises(BadInput, match=r"\[model\] chat_template: not \"plain\" and not a valid"):
        model("{% for m in messages %}")


def test_the_plain_template_writes_labelled_turns_as_the_docs_say() -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Anything unusual?"},
    ]
    text = env.from_string(PLAIN_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    expected = (
        "Be brief.\n\nUser: Hi?\n\nAssistant: Hello.\n\nUser: Anything unusual?\n\nAssistant:"
    )
    assert text == expected
    docs = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    shown = expected.replace("\n", "\\n")  # the page writes each newline as \n
    assert f"```text\n{shown}\n```" in docs


def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    save_file(tensors, str(path))
    return path


def test_a_vectors_file_is_read_in_each_dtype(tmp_path: Path) -> None:
    v = np.linspace(-1.0, 1.0, 8, dtype=np.float32)
    bf16 = (v.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bfloat16
    path = _write(tmp_path / "v.safetensors", {"ocean/1": v, "fear/1": v.astype(np.float16)})
    vectors = VectorFile(path, "p.toml: [sweep] vectors_file")
    vectors.check({("ocean", 1), ("fear", 1)}, 8)
    table = vectors.table({("ocean", 1)})
    data, dim, norm = table[("ocean", 1)]
    assert dim == 8 and np.frombuffer(data, "<f4").tolist() == v.tolist()
    assert math.isclose(norm, float(np.linalg.norm(v)), rel_tol=1e-6)
    raw = _bf16_file(tmp_path / "b.safetensors", "ocean/1", bf16)
    read = VectorFile(raw, "w").vectors[("ocean", 1)]
    assert np.allclose(read, v, atol=1e-2)


def _bf16_file(path: Path, name: str, values: np.ndarray) -> Path:
    entry = {"dtype": "BF16", "shape": [values.size], "data_offsets": [0, values.nbytes]}
    body = json.dumps({name: entry}).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + values.astype("<u2").tobytes())
    return path


@pytest.mark.parametrize(
    ("tensors", "fault"),
    [
        ({"ocean/1": np.ones(4, np.float32)}, "tensor ocean/1 has 4 values; the model's hidden"),
        ({"ocean/1": np.full(8, np.nan, np.float32)}, "not finite"),
        ({"ocean/1": np.zeros(8, np.float32)}, "all zeros"),
        ({"ocean/2": np.ones(8, np.float32)}, "has no tensor ocean/1, which the sweep injects"),
        ({"Ocean": np.ones(8, np.float32)}, r"is not named \{concept\}/\{layer\}"),
        ({"ocean/1": np.ones((2, 8), np.float32)}, "each vector is 1-D"),
        ({"ocean/1": np.ones(8, np.int32)}, "is I32; give F32"),
    ],
)
def test_a_wrong_vectors_file_is_one_line(
    tmp_path: Path, tensors: dict[str, np.ndarray], fault: str
) -> None:
    path = _write(tmp_path / "v.safetensors", tensors)
    with pytest.raises(BadInput, match=fault) as caught:
        VectorFile(path, "p.toml: [sweep] vectors_file").check({("ocean", 1)}, 8)
    assert str(caught.value).startswith(f"p.toml: [sweep] vectors_file: {path}: ")
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_safetensors_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "v.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(BadInput, match="not a safetensors file"):
        VectorFile(tmp_path / "v.safetensors", "w")
