"""Side-by-side comparison of trained models under several executions: tables and plots."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .evaluation import Execution, evaluate
from .rundir import atomic_write_text, write_json
from .training import Split, load_run, load_test_split

COLUMNS = [
    ("accuracy", "accuracy", "{:.3f}"),
    ("spikes_per_sample", "spikes/sample", "{:.1f}"),
    ("spike_density", "spike density", "{:.4f}"),
    ("synops_per_sample", "SynOps/sample", "{:.0f}"),
    ("forward_steps_per_timestep", "steps/timestep", "{:.2f}"),
    ("latency_steps_median", "latency steps", "{:.0f}"),
    ("latency_spikes_median", "latency spikes", "{:.0f}"),
    ("stop_accuracy", "acc. stop@1st out", "{:.3f}"),
    ("energy_nj", "energy nJ", "{:.1f}"),
    ("time_us", "time us", "{:.1f}"),
    ("latency_time_us_median", "decision us", "{:.1f}"),
]


def compare(
    runs: dict[str, str | Path],
    executions: Sequence[Execution],
    split: Split | None = None,
    *,
    which: str = "best",
    seed: int = 0,
    progress: bool = False,
    cost_profile="loihi",
    device="cpu",
) -> list[dict]:
    """Evaluate every run (name -> run directory) under every execution; one row each.

    ``split``: the test data (default: the test split of each run's own data set).
    ``cost_profile``: the hardware profile of the energy and time columns (docs/cost.md),
    named in each row's ``cost_profile``. ``device``: where the models run (``cpu``,
    ``cuda``, ``cuda:N``).
    """
    from .cost import get_profile

    profile = get_profile(cost_profile)
    rows = []
    cache: dict = {}
    for name, run_dir in runs.items():
        net, cfg, _ = load_run(run_dir, which)
        net.to(device)
        data = split
        if data is None:
            key = (cfg.dataset, cfg.data_dir, cfg.dt, cfg.timesteps, cfg.limit_test)
            if key not in cache:
                cache[key] = load_test_split(cfg, progress=progress)
            data = cache[key]
        for how in executions:
            result = evaluate(net, data, cfg, how, seed=seed, cost_profile=profile)
            summary = dict(result["summary"])
            if "stop_on_first_output" in result:
                summary["stop_accuracy"] = result["stop_on_first_output"]["accuracy"]
                summary["stop_spikes_per_sample"] = result["stop_on_first_output"][
                    "spikes_per_sample"
                ]
            rows.append(
                {
                    "model": name,
                    "training": cfg.training,
                    "execution": how.label,
                    "engine": result["engine"],
                    **summary,
                    "cost_profile": result["cost_profile"],
                    "budget": result["budget"],
                    "spikes_per_population": result["spikes_per_population"],
                }
            )
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    head = ["model", "execution"] + [title for _, title, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [r["model"], r["execution"]] + [_fmt(r.get(k), f) for k, _, f in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict]) -> str:
    head = ["model", "execution"] + [title for _, title, _ in COLUMNS]
    body = [[r["model"], r["execution"]] + [_fmt(r.get(k), f) for k, _, f in COLUMNS] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i < 2 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body])


def _fmt(value, f: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f.format(value)


def write_results(
    rows: Sequence[dict], out: Path, *, title: str = "asyncsnn comparison", notes: str = ""
) -> None:
    """``results.json``, ``results.md`` and the comparison plots into ``out``."""
    from .plots import budget_curves, spikes_per_layer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", list(rows))
    md = f"# {title}\n\n{markdown_table(rows)}\n{notes}"
    atomic_write_text(out / "results.md", md)
    curves = {
        f"{r['model']}, {r['execution']}": (r["budget"]["forward_steps"], r["budget"]["accuracy"])
        for r in rows
        if r["budget"]["forward_steps"]
    }
    if curves:
        budget_curves(curves, out / "accuracy_vs_budget.png")
    layers = list(rows[0]["spikes_per_population"]) if rows else []
    bars = {
        f"{r['model']}, {r['execution']}": list(r["spikes_per_population"].values()) for r in rows
    }
    if layers:
        spikes_per_layer(bars, layers, out / "spikes_per_layer.png")
