"""The one colour scale for signed differences (net detection, yes-shifts), and their unit.

Both the report's figures (figures.py, controls.py) and the explorer's page (explore/assets.py
hands `page_scale()` to it) colour a difference from this definition, so a colour means the same
thing in both: blue = positive (more detection under injection than false positives in
controls), white = 0, red = negative. Differences are shown in percentage points everywhere, as
report.md prints them. Pure Python; matplotlib is imported only by `colormap()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.colors import Colormap, Normalize

# ColorBrewer RdBu (11 classes), most negative first: the stops of matplotlib's "RdBu".
STOPS = (
    "#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7",
    "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061",
)  # fmt: skip
LIMIT = 100.0  # the scale spans −LIMIT..+LIMIT percentage points
UNIT = "percentage points"
MISSING = "#e4e4e4"  # a cell without the data to compute a difference
# Text on a cell is black above this relative luminance (ITU-R BT.709), white below.
INK_LUMINANCE = 0.45


def points(fraction: float | None) -> float | None:
    """A difference of two proportions (−1..1) in percentage points."""
    return None if fraction is None else 100.0 * fraction


def fmt_points(value: float | None) -> str:
    """`+16.7` (points), or `—`."""
    return "—" if value is None else f"{value:+.1f}"


# Rates and net differences as report.md, the adaptive and mentions sections print them: one
# home, so no section imports another to format a number.


def fmt_rate(m: dict[str, Any], name: str) -> str:
    """`45.0% [26.0–66.0] (9/20)`, or `—` with no data."""
    k, n = m["counts"][name]
    rate, ci = m[name], m[name + "_ci"]
    if rate is None:
        return "—"
    return f"{100 * rate:.1f}% [{100 * ci[0]:.1f}–{100 * ci[1]:.1f}] ({k}/{n})"


def fmt_net(m: dict[str, Any], name: str) -> str:
    """`+28.0 [+12.1, +41.0]` in percentage points, or `—` without both kinds of trial."""
    rate, ci = m[name], m[name + "_ci"]
    if rate is None:
        return "—"
    return f"{_signed_points(rate)} [{_signed_points(ci[0])}, {_signed_points(ci[1])}]"


def _signed_points(fraction: float | None) -> str:
    return fmt_points(points(fraction))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def colour_at(value: float | None) -> tuple[int, int, int]:
    """The RGB colour of `value` points: linear between evenly spaced stops, clipped at
    ±LIMIT. explorer.js `colour()` computes the same (the figures' colormap, to 1/1023)."""
    if value is None:
        return _rgb(MISSING)
    x = (max(-LIMIT, min(LIMIT, value)) + LIMIT) / (2 * LIMIT) * (len(STOPS) - 1)
    i = min(int(x), len(STOPS) - 2)
    f = x - i
    lo, hi = _rgb(STOPS[i]), _rgb(STOPS[i + 1])
    r, g, b = (round(a + (c - a) * f) for a, c in zip(lo, hi, strict=True))
    return r, g, b


def ink(rgb: tuple[float, float, float]) -> str:
    """Black text on light cells, white on dark; channels in 0..1."""
    r, g, b = rgb
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > INK_LUMINANCE else "white"


def colormap() -> tuple[Colormap, Normalize]:
    """The scale for matplotlib: data in points, NaN drawn in MISSING."""
    from matplotlib.colors import LinearSegmentedColormap, Normalize

    cmap = LinearSegmentedColormap.from_list("introspectd_diverging", list(STOPS), N=1024)
    return cmap.with_extremes(bad=MISSING), Normalize(-LIMIT, LIMIT)


def page_scale() -> dict[str, Any]:
    """The scale as the explorer's page reads it (JSON)."""
    return {
        "stops": list(STOPS),
        "limit": LIMIT,
        "unit": UNIT,
        "missing": MISSING,
        "ink_luminance": INK_LUMINANCE,
    }
