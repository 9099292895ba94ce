"""The report's figures: the explorer's colour scale and unit, names drawn as written, and
file names that are safe, bounded and one per model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from introspectd.report import scale
from introspectd.report.figures import model_heatmap
from introspectd.report.writer import load_inputs, write_report


def _record(model: str, concept: str, trial: int, injected: bool, passed: bool) -> dict[str, Any]:
    arm = "injection" if injected else "control"
    return {
        "id": f"20260123_143022_{concept}_{arm}_L24_S2.0_t{trial}",
        "concept": concept,
        "was_injected": injected,
        "response": "...",
        "config": {"model": model, "layer": 24, "strength": 2.0, "trial": trial},
        "judge": {"answer": "pass" if passed else "fail", "coherent": True, "reasoning": "."},
    }


def _cell(model: str, concept: str = "fear") -> list[dict[str, Any]]:
    """Injection passes 3 of 5, controls claim a detection in 1 of 5: net +40 points."""
    return [_record(model, concept, t, True, t < 3) for t in range(5)] + [
        _record(model, concept, t, False, t != 0) for t in range(5)
    ]


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _texts(figure: Any) -> list[Any]:
    from matplotlib.text import Text

    return [t for t in figure.findobj(Text) if t.get_text()]


def test_net_detection_figure_uses_the_explorers_scale_in_points(tmp_path: Path) -> None:
    records = load_inputs([_write(tmp_path / "a.jsonl", _cell("m"))]).records
    figure = model_heatmap("m", records, "net_detection")
    image = figure.axes[0].images[0]
    for value in (-100.0, -60.0, -5.0, 0.0, 40.0, 100.0):
        drawn = [round(255 * c) for c in image.cmap(image.norm(value))[:3]]
        assert max(abs(a - b) for a, b in zip(drawn, scale.colour_at(value), strict=True)) <= 1
    shown = [t.get_text() for t in _texts(figure)]
    assert "+40.0\n5/5" in shown  # points, as report.md and the explorer print them
    assert any(scale.UNIT in t for t in shown)  # the colour bar says so
    rates = [t.get_text() for t in _texts(model_heatmap("m", records, "injection_pass_rate"))]
    assert "60.0%\n3/5" in rates


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path: Path) -> None:
    model, concept = "$x^$ broken mathtext", "$\\alpha$"
    paths = write_report([_write(tmp_path / "a.jsonl", _cell(model, concept))], tmp_path / "r")
    assert len(paths.figures) == 4 and all(f.is_file() for f in paths.figures)
    records = load_inputs([tmp_path / "a.jsonl"]).records
    named = [
        t for t in _texts(model_heatmap(model, records, "net_detection")) if "$" in t.get_text()
    ]
    assert {t.get_text() for t in named} >= {
        concept,
        f"{model}: net detection (injection pass − control FP)",
    }
    assert not any(t.get_parse_math() for t in named)


def test_a_very_long_model_name_gets_a_bounded_file_name(tmp_path: Path) -> None:
    model = "org/" + "m" * 400
    paths = write_report([_write(tmp_path / "a.jsonl", _cell(model))], tmp_path / "r")
    assert len(paths.figures) == 4
    for figure in paths.figures:
        assert figure.is_file() and len(figure.name) < 130
        assert figure.name.startswith("org_mmmm")


def test_models_whose_names_reduce_alike_keep_their_own_figures(tmp_path: Path) -> None:
    # "a/b" and "a:b" both read "a_b"; "A_b" is the same file on macOS and Windows.
    models = ["a/b", "a:b", "A_b"]
    records = [r for i, m in enumerate(models) for r in _cell(m) if r["config"]["trial"] <= i + 2]
    paths = write_report([_write(tmp_path / "a.jsonl", records)], tmp_path / "r")
    names = [f.name.lower() for f in paths.figures]
    assert len(names) == len(set(names)) == 3 * 4
    on_disk = sorted((tmp_path / "r" / "figures").iterdir())
    assert len(on_disk) == 12 and len({f.read_bytes() for f in on_disk}) == 12
