"""One TOML table of a plan being read: each reader consumes a key, `finish` refuses the rest.

Types, defaults and bounds come from the keys table (plan_keys.py) through `read`; the
lower-level readers (`text`, `integer`, ...) serve keys whose checks need more.
"""

from __future__ import annotations

import math
from typing import Any

from introspectd.errors import BadInput
from introspectd.protocol import plan_keys
from introspectd.protocol.plan_checks import URL_RE


class Table:
    """One TOML table being read: each reader consumes a key; `finish` rejects the rest."""

    def __init__(self, file: str, name: str, data: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {_type_name(data)}")
        self.data = dict(data)

    def fail(self, key: str, why: str) -> None:
        where = f"[{self.name}] {key}".rstrip() if self.name else key
        raise BadInput(f"{self.file}: {where}: {why}")

    def take(self, key: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        if key not in self.data:
            return default
        value = self.data.pop(key)
        if isinstance(value, bool) and bool not in kinds:
            self.fail(key, f"must be {kind_name}, got a boolean")
        if not isinstance(value, kinds):
            self.fail(key, f"must be {kind_name}, got {_type_name(value)} {value!r}")
        return value

    def text(
        self, key: str, default: str, choices: tuple[str, ...] = (), multiline: bool = False
    ) -> str:
        """A string; control characters (a stray newline, NUL) only where text is prose."""
        value: str = self.take(key, default, (str,), "a string")
        allowed = "\n\t\r" if multiline else ""
        if any(_is_control(c) and c not in allowed for c in value):
            self.fail(key, f"must not contain control characters (newline, NUL...); got {value!r}")
        if choices and value not in choices:
            named = ", ".join(c for c in choices if c)  # "" (unset) is allowed, not named
            self.fail(key, f"must be one of {named}; got {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value: int = self.take(key, default, (int,), "an integer")
        if value < minimum:
            self.fail(key, f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be <= {maximum}, got {value}")
        return value

    def number(
        self, key: str, default: float, minimum: float, maximum: float, positive: bool = False
    ) -> float:
        """A finite number in [minimum, maximum] (above minimum when `positive`)."""
        value = float(self.take(key, default, (int, float), "a number"))
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")
        if positive and value <= minimum:
            self.fail(key, f"must be > {minimum:g}, got {value:g}")
        if value < minimum:
            self.fail(key, f"must be >= {minimum:g}, got {value:g}")
        if value > maximum:
            self.fail(key, f"must be <= {maximum:g}, got {value:g}")
        return value

    def url(self, key: str) -> str:
        value = self.text(key, "")
        if value and not URL_RE.fullmatch(value):
            self.fail(key, f"must be an http:// or https:// URL, got {value!r}")
        return value

    def array(self, key: str, default: Any) -> Any:
        return self.take(key, default, (list,), "a list")

    def read(self, name: str) -> Any:
        """A key of this table as plan_keys.py describes it: type, default, bounds, choices."""
        spec = plan_keys.key(self.name, name)
        if spec.kind == plan_keys.STRING:
            return self.text(name, spec.default, spec.choices, multiline=spec.prose)
        if spec.kind == plan_keys.INTEGER:
            low = int(spec.minimum) if spec.minimum is not None else 0
            high = int(spec.maximum) if spec.maximum is not None else None
            return self.integer(name, spec.default, low, high)
        if spec.kind == plan_keys.NUMBER:
            assert spec.minimum is not None and spec.maximum is not None, spec
            return self.number(name, spec.default, spec.minimum, spec.maximum, spec.positive)
        if spec.kind == plan_keys.BOOLEAN:
            return bool(self.take(name, spec.default, (bool,), "true or false"))
        raise TypeError(f"[{self.name}] {name} ({spec.kind}) has its own reader")

    def refuse_duplicates(self, key: str, values: list[Any], what: str) -> None:
        """One line naming the first value `values` holds twice (`what`: "concept", "arm"...)."""
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            self.fail(key, f"duplicate {what} {duplicates[0]!r}")

    def finish(self) -> None:
        if self.data:
            unknown = sorted(self.data)[0]
            hint = plan_keys.suggest(self.name, unknown)
            self.fail(unknown, f"unknown key ({hint}see docs/plan.md for every plan key)")


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or char in "\u2028\u2029"


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
