"""MkDocs hooks of the documentation site (``hooks:`` in mkdocs.yml).

* The API reference covers the public API: every name of ``asyncsnn.__all__`` has a
  ``::: asyncsnn.NAME`` block in ``api.md`` and a docstring, and so has every public method
  and property of a public class (one it inherits counts). Anything missing fails the build.
* The tutorials (``docs/tutorials/*.py``, jupytext percent scripts) are executed as notebooks
  (jupytext, nbclient, an IPython kernel) and rendered as Markdown pages, their figures as
  PNG files beside them. Nothing is fetched: the pages are plain Markdown.

The test suite executes the tutorials with :func:`execute` and renders them with
:func:`to_markdown` (tests/test_tutorials.py), which need jupytext, nbclient and ipykernel,
not MkDocs.
"""

from __future__ import annotations

import base64
import inspect
import os
import re
import tempfile
from pathlib import Path

TUTORIALS = "tutorials"


# ------------------------------------------------------------------ the API reference
def _undocumented() -> list[str]:
    import asyncsnn

    missing = []
    for name in asyncsnn.__all__:
        obj = getattr(asyncsnn, name)
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (own or "").strip():
            missing.append(name)
        if not inspect.isclass(obj):
            continue
        for member, value in vars(obj).items():
            if member.startswith("_"):
                continue
            f = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
            if not (callable(f) or isinstance(value, property)):
                continue
            docs = [getattr(f, "__doc__", None)]
            docs += [getattr(getattr(b, member, None), "__doc__", None) for b in obj.__mro__[1:]]
            if not any((d or "").strip() for d in docs):
                missing.append(f"{name}.{member}")
    return missing


def on_config(config):
    from mkdocs.exceptions import PluginError

    import asyncsnn

    api = Path(config["docs_dir"]) / "api.md"
    listed = set(re.findall(r"^::: asyncsnn\.(\w+)\s*$", api.read_text(), flags=re.M))
    absent = sorted(set(asyncsnn.__all__) - listed)
    if absent:
        raise PluginError(f"api.md has no '::: asyncsnn.NAME' block for public names {absent}")
    missing = _undocumented()
    if missing:
        raise PluginError(f"public names without a docstring: {missing}")
    return config


# ------------------------------------------------------------------ the tutorials
def execute(path: Path, cwd: Path | None = None, timeout: int = 600):
    """The tutorial ``path`` executed as a notebook in the folder ``cwd`` (a fresh temporary
    one by default: a tutorial writes its runs there); an nbformat notebook with its outputs.
    An error in a cell raises ``nbclient``'s ``CellExecutionError``."""
    if cwd is None:
        with tempfile.TemporaryDirectory() as folder:
            return execute(path, Path(folder), timeout)
    import jupytext
    from nbclient import NotebookClient

    nb = jupytext.read(path)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def to_markdown(nb, stem: str) -> tuple[str, dict[str, bytes]]:
    """A Markdown page of an executed notebook and its figures (name -> PNG bytes)."""
    parts, images = [], {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        parts.append(f"```python\n{cell.source}\n```")
        text = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                text.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                data = out.get("data", {})
                if "image/png" in data:
                    name = f"{stem}_{len(images) + 1}.png"
                    images[name] = base64.b64decode(data["image/png"])
                    parts.append(f"![figure {len(images)}]({name})")
                elif "text/plain" in data:
                    text.append(data["text/plain"] + "\n")
        if text:
            parts.append("```text\n" + "".join(text).rstrip("\n") + "\n```")
    return "\n\n".join(parts) + "\n", images


def on_files(files, config):
    from mkdocs.structure.files import File

    folder = Path(config["docs_dir"]) / TUTORIALS
    for path in sorted(folder.glob("*.py")):
        md, images = to_markdown(execute(path), path.stem)
        page = f"{TUTORIALS}/{path.stem}.md"
        files.append(File.generated(config, page, content=md))
        for name, png in images.items():
            files.append(File.generated(config, f"{TUTORIALS}/{name}", content=png))
    return files
