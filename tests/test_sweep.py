"""``asyncsnn sweep``: the grid file, trial names, the sequential and the Ray executors, the
retry, skipping and resuming, and the final table against ``asyncsnn compare``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asyncsnn import sweep as sw
from asyncsnn.cli import main
from asyncsnn.reproduce import BUDGETS, _execute, _task_config, reproduce
from asyncsnn.rundir import DataFacts, RunDir, RunRecord
from asyncsnn.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = """
[base]
dataset = "digits"
limit_train = 60
limit_test = 20
epochs = {epochs}
hidden = [8]
timesteps = 6
batch_size = 30
"""


def _grid(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------ the grid
def test_trials_are_the_product_in_the_grid_order_last_key_fastest(tmp_path):
    grid = sw.load_grid(
        _grid(
            tmp_path,
            '[base]\nepochs = 2\n[grid]\ntraining = ["layered", "unlayered"]\n'
            "lr = [0.001, 5e-4, 1e-06]\nhidden = [[128, 128], [64]]\n",
        )
    )
    names = [t.name for t in grid.trials]
    assert len(names) == 2 * 3 * 2 == len(set(names))
    assert names[:4] == [
        "training=layered,lr=0.001,hidden=128-128",
        "training=layered,lr=0.001,hidden=64",
        "training=layered,lr=0.0005,hidden=128-128",
        "training=layered,lr=0.0005,hidden=64",
    ]
    assert names[5] == "training=layered,lr=1e-06,hidden=64"
    assert names[6] == "training=unlayered,lr=0.001,hidden=128-128"
    last = grid.trials[-1]
    assert last.values == {"training": "unlayered", "lr": 1e-06, "hidden": [64]}
    assert last.config == {"epochs": 2, "training": "unlayered", "lr": 1e-06, "hidden": [64]}
    assert grid.default_out() == Path("runs/sweep-grid")
    assert [e.label for e in grid.executions] == [
        "layered",
        "async-random F=8",
        "async-momentum F=8",
    ]
    assert grid.resources == sw.Resources(cpus=1, gpus=0, local_cpus=None)


def test_a_table_of_settings_varies_them_together(tmp_path):
    grid = sw.load_grid(
        _grid(
            tmp_path,
            "[grid]\nrecipe = [{training = 'layered'}, "
            "{training = 'unlayered', scheduler = 'random'}]\nseed = [0, 1]\n"
            "[resources]\ncpus = 0.5\ngpus = 1\nlocal_cpus = 2\n"
            "[compare]\nexecutions = ['layered', 'async-random:4']\ncheckpoint = 'last'\n",
        )
    )
    assert [t.name for t in grid.trials] == [
        "training=layered,seed=0",
        "training=layered,seed=1",
        "training=unlayered,scheduler=random,seed=0",
        "training=unlayered,scheduler=random,seed=1",
    ]
    assert grid.trials[2].config == {"training": "unlayered", "scheduler": "random", "seed": 0}
    assert grid.resources.ray == {"cpu": 0.5, "gpu": 1}
    assert grid.resources.threads == 1
    assert [e.label for e in grid.executions] == ["layered", "async-random F=4"]
    assert grid.checkpoint == "last"


def test_names_are_safe_for_a_file_system_and_distinct():
    names = [t.name for t in sw.expand({}, [("data_dir", ("/data/a b", "/data/a:b", "x"))])]
    assert names[2] == "data_dir=x"
    assert names[0] != names[1]
    for name in names[:2]:  # both "data_dir=_data_a_b" before the hash of their values
        assert (
            name.startswith("data_dir=_data_a_b-") and len(name) == len("data_dir=_data_a_b-") + 8
        )
    assert all("/" not in n and ":" not in n and " " not in n for n in names)
    long = sw.trial_name({"init": "r" * 300, "seed": 1})
    assert len(long) == sw.MAX_NAME and long.startswith("init=rrr")
    assert long != sw.trial_name({"init": "r" * 300, "seed": 2})
    assert sw.trial_name({"silent_gradients": True, "mix_schedulers": []}) == (
        "silent_gradients=true,mix_schedulers=none"
    )


BAD = [
    ("[base]\nlrr = 0.1\n[grid]\nseed = [0]\n", r"\[base\] 'lrr' is not a TrainConfig key; did "
     r"you mean 'lr'\?"),
    ("[grid]\nsed = [0, 1]\n", r"\[grid\] 'sed' is not a TrainConfig key; did you mean 'seed'"),
    ("[grid]\nr = [{training = 'layered', lrr = 1}]\n", r"\[grid\] 'r'\[0\] 'lrr' is not a "
     "TrainConfig key"),
    ("[grid]\nseed = 1\n", r"\[grid\] 'seed' must be a non-empty list, got 1"),
    ("[grid]\nseed = []\n", r"\[grid\] 'seed' must be a non-empty list, got \[\]"),
    ("[grid]\nseed = [0, 0]\n", r"\[grid\] 'seed' lists 0 twice"),
    ("[base]\nseed = 0\n", "the grid is empty"),
    ("[base]\nseed = 0\n[grid]\n", "the grid is empty"),
    ("[base]\nseed = 0\n[grid]\nseed = [1, 2]\n", r"'seed' is both in \[base\] and in \[grid\]"),
    ("[base]\ntraining = 'layered'\n[grid]\nr = [{training = 'unlayered'}]\n",
     r"'training' is both in \[base\] and in \[grid\] \(in 'r'\)"),
    ("[grid]\nseed = [0]\nr = [{seed = 1}]\n", r"'seed' is set by both \[grid\] 'seed' and "
     r"\[grid\] 'r'"),
    ("[grid]\nseed = [0]\n[resources]\ncpus = 0\n", r"\[resources\] cpus must be a number > 0, "
     "got 0"),
    ("[grid]\nseed = [0]\n[resources]\ngpus = -1\n", r"\[resources\] gpus must be a number >= 0"),
    ("[grid]\nseed = [0]\n[resources]\ncpus = 'two'\n", r"\[resources\] cpus must be a number"),
    ("[grid]\nseed = [0]\n[resources]\ncpus = 4\nlocal_cpus = 2\n", r"cpus \(4\) per trial "
     r"exceed local_cpus \(2\)"),
    ("[grid]\nseed = [0]\n[resources]\nmemory = 4\n", r"\[resources\] 'memory' is not a resource"),
    ("[grids]\nseed = [0]\n", "unknown table 'grids'"),
    ("[grid]\nseed = [0\n", "not valid TOML"),
    ("[grid]\ntraining = ['layered', 'sideways']\n", "trial training=sideways: training must be "
     "one of"),
    ("[grid]\nseed = [0]\n[compare]\nexecutions = 'async-nope'\n", r"\[compare\] 'executions': "
     "unknown"),
    ("[grid]\nseed = [0]\n[compare]\nruns = 3\n", r"\[compare\] 'runs' is not a setting"),
    ("[grid]\nseed = [0]\n[compare]\ncost_profile = 'abacus'\n", r"'cost_profile': unknown cost "
     "profile 'abacus'"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_grid_files_are_clear_errors_naming_the_file_and_the_key(tmp_path, text, message):
    path = _grid(tmp_path, text, "bad.toml")
    with pytest.raises(sw.GridError, match=rf"^{str(path)}: .*{message}"):
        sw.load_grid(path)


def test_the_command_reports_a_bad_grid_in_one_line(tmp_path):
    path = _grid(tmp_path, "[grid]\nsed = [0]\n", "bad.toml")
    r = CliRunner().invoke(main, ["sweep", str(path)])
    assert r.exit_code == 1
    assert (
        r.output.strip()
        == f"Error: {path}: [grid] 'sed' is not a TrainConfig key; did you mean 'seed'?"
    )


def test_the_study_grid_is_reproduce_s_nmnist_grid():
    grid = sw.load_grid(ROOT / "grids" / "nmnist-study.toml")
    study = next(s for s in BUDGETS["standard"] if s.dataset == "nmnist")
    assert study.settings == next(s for s in BUDGETS["full"] if s.dataset == "nmnist").settings
    recipes = {"layered": "training=layered", "unlayered-random":
               "training=unlayered,scheduler=random", "unlayered-momentum":
               "training=unlayered,scheduler=momentum"}  # fmt: skip
    expected = {
        f"{prefix},seed={seed}": _task_config(study, None, recipe, seed)
        for recipe, prefix in recipes.items()
        for seed in (0, 1, 2)
    }
    assert sorted(t.name for t in grid.trials) == sorted(expected)
    for trial in grid.trials:
        ours = TrainConfig.from_dict(trial.config).to_dict()
        theirs = TrainConfig.from_dict(expected[trial.name]).to_dict()
        assert ours.pop("data_dir") == "data/nmnist" and theirs.pop("data_dir") is None
        assert ours == theirs, trial.name
    assert ours["epochs"] == 50 and ours["batch_size"] == 32 and ours["refractory_dropout"] == 0.8
    assert len(grid.executions) == 7
    quick = sw.load_grid(ROOT / "grids" / "digits-quick.toml")
    assert [t.name for t in quick.trials] == [
        "training=layered,seed=0",
        "training=layered,seed=1",
        "training=unlayered,seed=0",
        "training=unlayered,seed=1",
    ]
    assert all(t.config["dataset"] == "digits" for t in quick.trials)


# ------------------------------------------------------------------------------ executors
def _flaky(folder: Path):
    """A task's work that fails as its task says (never, on its first attempt, always),
    counting its attempts in ``folder``."""

    def work(task):
        mark = folder / task["name"]
        with open(mark, "a") as f:
            f.write("x")
        n = len(mark.read_text())
        if task["fail"] == "always" or (task["fail"] == "once" and n == 1):
            raise ValueError(f"{task['name']} fails on attempt {n}")
        return {"name": task["name"], "attempt": n}

    return work


FLAKY = [{"name": "ok", "fail": "no"}, {"name": "once", "fail": "once"},
         {"name": "always", "fail": "always"}]  # fmt: skip


def test_the_sequential_executor_tries_a_failed_task_once_more(tmp_path):
    lines, finished = [], []
    outcomes = sw.run_tasks(
        FLAKY,
        _flaky(tmp_path),
        names=[t["name"] for t in FLAKY],
        executor="sequential",
        done=lambda i, r: finished.append((i, r["attempt"])),
        say=lines.append,
    )
    assert [(o.name, o.attempts, o.error) for o in outcomes] == [
        ("ok", 1, None),
        ("once", 2, None),
        ("always", 2, "ValueError: always fails on attempt 2"),
    ]
    assert [o.result for o in outcomes[:2]] == [
        {"name": "ok", "attempt": 1},
        {"name": "once", "attempt": 2},
    ]
    assert finished == [(0, 1), (1, 2)]
    assert lines == [
        "once: attempt 1 failed (ValueError: once fails on attempt 1); again",
        "always: attempt 1 failed (ValueError: always fails on attempt 1); again",
    ]
    with pytest.raises(ValueError, match="the executor is"):
        sw.run_tasks(FLAKY, len, executor="dask")


def test_without_ray_the_sweep_runs_in_process_skips_finished_trials_and_matches_compare(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is missing
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    assert not sw.ray_available()
    grid = _grid(
        tmp_path,
        TINY.format(epochs=1)
        + '[grid]\ntraining = ["layered", "unlayered"]\n'
        + '[compare]\nexecutions = "layered,async-momentum"\n',
    )
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["sweep", str(grid), "--out", str(out)])
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.stderr.splitlines() if ln]
    assert warned == [
        'Ray is not installed (pip install "asyncsnn[sweep]"): running the 2 task(s) one after '
        "another in this process"
    ]
    runs = [out / "training=layered", out / "training=unlayered"]
    assert sorted(p for p in out.iterdir() if p.is_dir()) == runs
    assert all(sw.finished(run) for run in runs)
    assert (
        "2 trials in" in r.stdout and "0 finished before" in r.stdout and "2 to train" in r.stdout
    )
    # the table is asyncsnn compare's for the same runs, executions and seed
    table = r.stdout[r.stdout.index("model ") : r.stdout.index("Energy and time")].rstrip()
    again = CliRunner().invoke(
        main, ["compare", *map(str, runs), "--executions", "layered,async-momentum"]
    )
    assert again.exit_code == 0, again.output
    theirs = again.stdout[again.stdout.index("model ") : again.stdout.index("Energy and time")]
    assert table == theirs.rstrip()
    assert table.count("\n") == 2 + 2 * 2 - 1  # header, rule, two runs by two executions
    rows = json.loads((out / "results.json").read_text())
    assert [(row["model"], row["execution"]) for row in rows] == [
        ("training=layered", "layered"),
        ("training=layered", "async-momentum F=8"),
        ("training=unlayered", "layered"),
        ("training=unlayered", "async-momentum F=8"),
    ]
    assert all(0 <= row["accuracy"] <= 1 and row["spikes_per_sample"] > 0 for row in rows)
    assert "| training=unlayered | async-momentum F=8 |" in (out / "results.md").read_text()
    # a second call trains nothing: the trainer is not called, no file of a run changes
    stamps = {run: _mtimes(run) for run in runs}
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("trained again"))
    r2 = CliRunner().invoke(main, ["sweep", str(grid), "--out", str(out)])
    assert r2.exit_code == 0, r2.output
    assert "2 finished before, 0 to resume, 0 to train" in r2.stdout
    assert r2.stderr == ""  # nothing to run: no word on the executor
    assert {run: _mtimes(run) for run in runs} == stamps
    assert r2.stdout[r2.stdout.index("model ") :].startswith(table)
    dry = CliRunner().invoke(main, ["sweep", str(grid), "--out", str(out), "--dry-run"])
    assert dry.stdout.splitlines() == [f"finished  {run}" for run in runs] + ["2 trials"]


def test_a_failing_trial_is_retried_resumes_and_is_reported_after_the_others(tmp_path, monkeypatch):
    """The trial whose second epoch fails once resumes from its first on the retry; the trial
    whose data set is missing fails twice, is named with its error, and the command exits 1
    after the table of the trial that trained."""
    monkeypatch.setitem(sys.modules, "ray", None)
    calls = []
    fit, epoch = Trainer.fit, Trainer._epoch

    def failing_epoch(self, state, fit_split, val, position, stops):
        if position[0] == 1 and not any(c[1] == "failed" for c in calls):
            calls.append((self.run_dir.name, "failed"))
            raise RuntimeError("a node went away")
        return epoch(self, state, fit_split, val, position, stops)

    def spy(self, resume=False):
        calls.append((self.run_dir.name, resume))
        return fit(self, resume)

    monkeypatch.setattr(Trainer, "_epoch", failing_epoch)
    monkeypatch.setattr(Trainer, "fit", spy)
    grid = _grid(
        tmp_path,
        TINY.format(epochs=2).replace('dataset = "digits"\n', "")
        + f'data_dir = "{tmp_path / "nothing"}"\ntraining = "layered"\n'
        + '[grid]\ndataset = ["digits", "nmnist"]\n[compare]\nexecutions = "layered"\n',
    )
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["sweep", str(grid), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert calls == [
        ("dataset=digits", False),
        ("dataset=digits", "failed"),  # in epoch 2, after epoch 1's checkpoint
        ("dataset=digits", True),  # the retry resumes
    ]  # the N-MNIST trial fails loading its data, before a Trainer starts
    assert "dataset=digits: attempt 1 failed (RuntimeError: a node went away); again" in r.stdout
    lines = [json.loads(ln) for ln in (out / "dataset=digits" / "metrics.jsonl").open()]
    assert [ln["epoch"] for ln in lines] == [1, 2]
    assert sw.finished(out / "dataset=digits")
    assert not RunDir(out / "dataset=nmnist").holds_run()
    assert "dataset=digits  layered" in r.stdout  # the table of the trial that trained
    assert "dataset=nmnist" not in r.stdout.split("model ")[1]
    errors = r.stderr.splitlines()
    assert errors[-2].startswith(
        "failed: dataset=nmnist after 2 attempt(s): DatasetNotFoundError: N-MNIST not found"
    )
    assert errors[-1] == "1 of 2 trials failed; run the same command again to retry them"


def test_a_cluster_needs_ray_and_reproduce_says_so_too(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    grid = _grid(tmp_path, TINY.format(epochs=1) + '[grid]\ntraining = ["layered"]\n')
    r = CliRunner().invoke(main, ["sweep", str(grid), "--out", str(tmp_path / "o"), "-h"])
    assert "--address" in r.stdout and "--cpus" in r.stdout
    r = CliRunner().invoke(
        main, ["sweep", str(grid), "--out", str(tmp_path / "o"), "--address", "auto"]
    )
    assert r.exit_code == 1
    assert r.stderr.strip() == 'Error: running on Ray needs Ray: pip install "asyncsnn[sweep]"'
    assert not RunDir(tmp_path / "o" / "training=layered").holds_run()
    args = ["reproduce", "--datasets", "digits", "--out", str(tmp_path / "rep")]
    r = CliRunner().invoke(main, [*args, "--executor", "ray"])
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == 'Error: running on Ray needs Ray: pip install "asyncsnn[sweep]"'
    r = CliRunner().invoke(main, [*args, "--executor", "dask"])
    assert r.exit_code == 2 and "'dask' is not one of 'process', 'ray'" in r.stderr
    with pytest.raises(ValueError, match="an address names a Ray cluster"):
        reproduce(tmp_path / "rep", data_root=tmp_path, address="auto")


def test_a_run_of_other_settings_is_refused_before_anything_trains(tmp_path):
    grid = _grid(tmp_path, TINY.format(epochs=1) + '[grid]\ntraining = ["layered"]\n')
    out = tmp_path / "out"
    cfg = TrainConfig.from_dict({**sw.load_grid(grid).trials[0].config, "hidden": [9]})
    facts = DataFacts(input_shape=(2, 8, 8), n_classes=10, dt=0.01)
    RunDir(out / "training=layered").write_record(RunRecord(cfg.to_dict(), facts))
    with pytest.raises(ValueError, match=r"other settings than this grid's: hidden \(recorded"):
        sw.sweep(grid, out, say=lambda line: None)


# ------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def local_ray():
    """An embedded Ray of 2 CPUs (started as the sweep starts it), shared by the Ray tests."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'asyncsnn[sweep]')")
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed (ray[tune])")
    if ray.is_initialized():
        ray.shutdown()
    sw.start_ray(local_cpus=2)
    assert ray.cluster_resources()["CPU"] == 2
    yield ray
    ray.shutdown()


def test_reproduce_hands_its_tasks_to_ray_which_retries_a_failed_one_once(local_ray, tmp_path):
    """reproduce's executor on Ray: each task a Tune trial, a failed one tried once more;
    one that fails twice raises TrialsFailed (naming it) once the others have ended."""
    lines, finished = [], []
    tasks = FLAKY[1:]  # the task that succeeds at once: the sweep below
    with pytest.raises(sw.TrialsFailed, match=r"^1 of 2 failed: always: ValueError: always "):
        _execute(
            tasks,
            2,
            _flaky(tmp_path),
            lambda i, r: finished.append((i, r["attempt"])),
            executor="ray",
            names=[t["name"] for t in tasks],
            say=lines.append,
        )
    assert finished == [(0, 2)]  # "once", done on its second attempt
    assert [(tmp_path / t["name"]).read_text() for t in tasks] == ["xx", "xx"]
    assert "once: attempt 1 failed (ValueError: once fails on attempt 1); again" in lines
    assert "always: attempt 1 failed (ValueError: always fails on attempt 1); again" in lines
    kept = next(ln for ln in lines if ln.startswith("Ray Tune's logs of the failed trials: "))
    folder = Path(kept.split(": ", 1)[1])
    assert "always fails on attempt 2" in (folder / "always" / "error.txt").read_text()


def test_on_a_local_ray_of_two_cpus_a_sweep_completes_and_skips_finished_trials(
    local_ray, tmp_path
):
    grid = _grid(
        tmp_path,
        TINY.format(epochs=1)
        + '[grid]\ntraining = ["layered", "unlayered"]\nscheduler = ["random", "momentum"]\n'
        + '[resources]\ncpus = 2\n[compare]\nexecutions = "async-momentum"\n',
    )
    out = tmp_path / "out"
    lines = []
    first = sw.sweep(grid, out, say=lines.append)
    assert first.executor == "ray" and first.failed == []
    names = [t.name for t in first.grid.trials]
    assert names == [
        f"training={t},scheduler={s}"
        for t in ("layered", "unlayered")
        for s in ("random", "momentum")
    ]
    assert first.status == dict.fromkeys(names, "trained")
    assert any("on the Ray this process already runs (2 CPUs" in ln for ln in lines)
    assert sum(": trained " in ln for ln in lines) == 4
    assert [row["model"] for row in first.rows] == names
    assert all(sw.finished(out / n) for n in names)
    assert not (out / ".tune").exists()  # Ray Tune's own files go once every trial succeeded
    for name in names:
        saved = json.loads((out / name / "config.json").read_text())["config"]
        expected = {**TrainConfig().to_dict(), **first.grid.trials[names.index(name)].config}
        assert saved == {**expected, "dt": saved["dt"]}
    # a second call trains nothing and gives the same table
    stamps = _mtimes(out / names[0])
    lines.clear()
    second = sw.sweep(grid, out, say=lines.append)
    assert second.status == dict.fromkeys(names, "finished before")
    assert lines == [f"4 trials in {out}: 4 finished before, 0 to resume, 0 to train"]
    assert _mtimes(out / names[0]) == stamps
    assert second.table == first.table
