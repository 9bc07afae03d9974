"""``asyncsnn demo``: the study's central comparison on the built-in digits, in minutes.

Two models with the same architecture and seed, one trained layer-synchronously and one with
unlayered backprop (through asynchronous execution, momentum policy, F = 8), each evaluated
under layered, async-random and async-momentum execution on the test split.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .evaluation import Execution
from .report import compare, text_table, write_results
from .rundir import RunDir, write_json
from .training import TrainConfig, Trainer, batch_seed, forward, load_run, load_splits

#: the demo's training settings (both models). Bins of 30 ms (10 per sample) hold about 50
#: input events each, enough for the order of delivery to matter: with them the
#: layer-synchronously trained model decides later without the barrier and the unlayered one
#: sooner, with fewer spikes (README, "What the demo shows"; checked over seeds 0-2).
DEMO = {
    "dataset": "digits",
    "dt": 0.03,
    "hidden": (64,),
    "epochs": 12,
    "batch_size": 32,
    "lr": 2e-3,
    "tau_m": 20e-3,
    "threshold": 0.5,
    "input_dropout": 0.1,
    "group_size": 8,
    "scheduler": "momentum",
}
EXECUTIONS = [
    Execution("layered"),
    Execution("async", "random", 8),
    Execution("async", "momentum", 8),
]


def run_demo(
    out: str | Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
    quiet: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> list[dict]:
    """Run the demo into ``out``; returns the table's rows (``limit_*``: smaller data, for
    smoke tests)."""
    out = Path(out)
    started = time.perf_counter()
    settings = dict(DEMO, seed=seed, limit_train=limit_train, limit_test=limit_test)
    if epochs is not None:
        settings["epochs"] = epochs
    base = TrainConfig(**settings)
    say = (lambda *a: None) if quiet else print
    say("asyncsnn demo: built-in digits as event streams (3 saccades per image)")
    splits = load_splits(base, progress=not quiet)
    facts = splits[3]
    say(
        f"  {facts.train_samples} training, {facts.val_samples} validation, "
        f"{facts.test_samples} test samples; input {list(facts.input_shape)}, "
        f"{facts.timesteps} timesteps of {facts.dt * 1e3:g} ms"
    )
    runs = {}
    for training in ("layered", "unlayered"):
        run_dir = out / training
        if RunDir(run_dir).holds_run():
            shutil.rmtree(run_dir)  # a previous demo's model: train it anew
        cfg = TrainConfig(**dict(settings, training=training))
        say(f"training the {training} model ({cfg.epochs} epochs) into {run_dir}")
        Trainer(cfg, run_dir, quiet=quiet, splits=splits).fit()
        runs[f"{training}-trained"] = run_dir
    say("evaluating both models under layered, async-random and async-momentum execution")
    rows = compare(runs, EXECUTIONS, splits[2], which="best", seed=seed)
    elapsed = time.perf_counter() - started
    notes = (
        f"Built-in digits, {facts.test_samples} test samples; models "
        f"{list(facts.input_shape)}-{'-'.join(map(str, base.hidden))}-{facts.n_classes}, "
        f"{base.epochs} epochs each; F = 8. Latencies are medians over the samples whose "
        f"prediction settles on the right answer. Demo time: {elapsed:.0f} s.\n"
    )
    write_results(rows, out, title="asyncsnn demo: layered vs unlayered training", notes=notes)
    _raster(runs, splits[2], out / "raster.png", seed)
    say("")
    say(text_table(rows))
    say("")
    say(
        f"written to {out}: results.json, results.md, accuracy_vs_budget.png, "
        f"spikes_per_layer.png, raster.png ({elapsed:.0f} s)"
    )
    write_json(out / "demo.json", {"seconds": elapsed, "settings": base.to_dict()})
    return rows


def _raster(runs: dict, test, path: Path, seed: int) -> None:
    from .plots import raster

    x = test.x[:1]
    panels, boundaries = {}, []
    for name, run_dir in runs.items():
        net, cfg, _ = load_run(run_dir, "best")
        sizes = [p.size for p in net.populations]
        boundaries = [sum(sizes[:i]) for i in range(1, len(sizes))]
        with torch.no_grad():
            for how in (Execution("layered"), Execution("async", "momentum", 8)):
                r = forward(
                    net,
                    x,
                    cfg,
                    training=False,
                    seed=batch_seed(seed, 7),
                    execution=how.execution,
                    scheduler=how.scheduler,
                    group_size=how.group_size,
                )
                panels[f"{name}, {how.label}"] = r.spikes[:, 0]
    raster(panels, boundaries, path)
