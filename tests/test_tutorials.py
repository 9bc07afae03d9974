"""The tutorials (docs/tutorials/*.py, jupytext percent scripts) run as notebooks, as the
documentation site's build runs them (docs/hooks.py), and render with their figures."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

pytest.importorskip("jupytext")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

DOCS = Path(__file__).resolve().parents[1] / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tutorials_are_in_the_site():
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    assert [p.stem for p in TUTORIALS] == sorted(
        ["first_run", "from_snntorch", "training", "chip_cost"]
    )
    for p in TUTORIALS:
        assert f"tutorials/{p.stem}.md" in nav


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_and_renders(path, tmp_path):
    hooks = _hooks()
    started = time.perf_counter()
    nb = hooks.execute(path, tmp_path, timeout=120)
    took = time.perf_counter() - started
    assert took < 60, f"{path.name} took {took:.0f} s: keep the tutorials' trainings tiny"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    md, images = hooks.to_markdown(nb, path.stem)
    assert md.startswith("# ")  # the title cell
    assert images and all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in images.values())
    for name in images:
        assert f"]({name})" in md
    # every code cell is shown, with what it printed
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert md.count("```python") == len(code)
    printed = [o.text for c in code for o in c.outputs if o.output_type == "stream"]
    assert all(line in md for text in printed for line in text.splitlines() if line.strip())


def test_writing_a_plot_keeps_the_session_backend(tmp_path):
    """A training writes training.png; a notebook's figures must still show after it."""
    import matplotlib

    from asyncsnn.plots import budget_curves

    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        budget_curves({"a": ([0, 1, 2], [0.1, 0.5, 0.9])}, tmp_path / "b.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
