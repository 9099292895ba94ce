"""The public surface: `introspectd.__all__` resolves, and importing it stays cheap."""

from __future__ import annotations

import subprocess
import sys

import introspectd
from introspectd.errors import IntrospectdError


def test_every_public_name_resolves() -> None:
    for name in introspectd.__all__:
        assert getattr(introspectd, name) is not None, name
    assert issubclass(introspectd.BadInput, IntrospectdError)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        introspectd.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_import_and_public_names_never_load_torch() -> None:
    code = (
        "import sys, introspectd\n"
        "[getattr(introspectd, n) for n in introspectd.__all__]\n"
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
