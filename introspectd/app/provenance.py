"""What made a run's generations, stored once per process that loads the model
(`store.provenance`) and shown by `status` and the report: introspectd's version and git
commit, Python, torch, transformers, CUDA and device names, the model's revision or file
sha256, and the judge's fingerprint. A fact that cannot be known is None, never a failure:
provenance describes a run, it must not stop one.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import introspectd
from introspectd.errors import BadInput
from introspectd.judge.prompt import judge_prompt_for
from introspectd.judge.provenance import judge_fingerprint
from introspectd.protocol.model_provenance import model_identity
from introspectd.protocol.models import ModelRef
from introspectd.protocol.plan import Plan

if TYPE_CHECKING:
    from introspectd.generate.session import ModelSession

GIT_TIMEOUT_S = 5.0


def collect_provenance(plan: Plan, ref: ModelRef, session: ModelSession) -> dict[str, Any]:
    """Every fact; runs in the generator's thread (hashing weights takes a moment), once
    the model is loaded: its devices are named."""
    from introspectd.generate.environment import torch_environment  # torch is loaded by now

    return {
        "introspectd": {"version": introspectd.__version__, "commit": git_commit()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "transformers": package_version("transformers"),
        **torch_environment(session.runner.model),
        "model": model_identity(ref),
        "judge": judge_facts(plan),
    }


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """HEAD of the checkout introspectd runs from ("+dirty" with uncommitted changes to
    tracked files); None for an installed wheel or without git."""
    root = Path(introspectd.__file__).resolve().parents[1]
    if not (root / ".git").exists():  # a worktree's .git is a file: exists() covers both
        return None
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=True,
    )
    return done.stdout.strip()


def judge_facts(plan: Plan) -> dict[str, Any]:
    """The plan's judge and its fingerprint (judge/provenance.py), as its judgements store it;
    whether it was on (a run without a key judges nothing)."""
    cfg = plan.judge
    base_dir = plan.path.parent if isinstance(plan.path, Path) else None
    try:
        prompt = judge_prompt_for(cfg, base_dir, tuple(plan.sweep.concepts))
        fingerprint: str | None = judge_fingerprint(cfg, prompt.fewshot_hash)
    except BadInput:  # an unreadable few-shot file: the judge says so itself when it starts
        fingerprint = None
    return {
        "model": cfg.model,
        "api": cfg.api,
        "prompt_version": cfg.prompt_version,
        "fingerprint": fingerprint,
        "enabled": cfg.is_enabled(cfg.api_key()),
    }
