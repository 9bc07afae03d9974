"""The Python examples of the README and of the documentation site's pages run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# pages whose examples run in one namespace, in this order (concepts.md's examples use the
# network and input of getting-started.md's)
PAGES = {
    "README": ["README.md"],
    "index": ["docs/index.md"],
    "getting-started": ["docs/getting-started.md", "docs/concepts.md"],
    "train": ["docs/how-to/train.md"],
}


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_readme_and_the_pages_have_examples():
    assert len(_blocks(README)) >= 1
    assert sum(len(_blocks(ROOT / p)) for p in PAGES["getting-started"]) >= 6


def test_the_readme_keeps_the_set_up_commands():
    """CI (.ci/run) calls the README's test command; the README links the site."""
    text = README.read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = next(line for line in ci.splitlines() if "python -m pytest -q" in line)
    assert f"```bash\n{test_command}\n```" in text
    assert "](docs/index.md)" in text


@pytest.mark.parametrize("group", list(PAGES))
def test_examples_run(group, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write run directories
    namespace: dict = {}
    for page in PAGES[group]:
        for i, block in enumerate(_blocks(ROOT / page)):
            try:
                exec(compile(block, f"{page} block {i}", "exec"), namespace)
            except Exception as e:  # pragma: no cover - the message names the block
                pytest.fail(f"{page} python block {i} failed: {e!r}\n{block}")
