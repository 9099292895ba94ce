"""Shared fixtures: built-in random models cached once per session, plan files, CLI runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
    monkeypatch.delenv("BATCH_TASK_INDEX", raising=False)
    monkeypatch.delenv("BATCH_TASK_COUNT", raising=False)


@pytest.fixture(scope="session")
def tiny_runner(model_cache: Path):  # type: ignore[no-untyped-def]
    from introspectd.models import resolve_model
    from introspectd.runner import Runner

    return Runner(resolve_model("builtin:tiny", "", "test"))


from gcs_emulator import gcs_emulator, gcs_proxy  # noqa: E402, F401  (fixtures for every module)
