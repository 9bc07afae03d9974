"""``asyncsnn sweep``: a grid of trainings from a TOML file, run on Ray Tune or one by one.

A grid file (``docs/sweeps.md``) has the TrainConfig settings every trial shares (``[base]``),
the settings that vary (``[grid]``, each a list; the trials are their cartesian product), the
resources of one trial (``[resources]``) and the executions of the final comparison
(``[compare]``). :func:`load_grid` reads and checks it; each trial trains into
``OUT/NAME``, ``NAME`` written from its grid values (:func:`trial_name`).

:func:`run_tasks` is the executor, shared with ``asyncsnn reproduce --executor ray``: every
task becomes one trial of a Ray Tune grid search (an embedded Ray on this machine, or a
cluster at an address), with the resources of :class:`Resources`, retried once where it fails;
without Ray, the tasks run one after another in this process, with the same retry.

:func:`sweep` plans the trials (a finished run is skipped, a half-finished one resumes from
its last checkpoint), runs the others through :func:`run_tasks` and ends with the comparison
table of every finished trial (:func:`asyncsnn.report.compare`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Grid",
    "GridError",
    "Outcome",
    "Resources",
    "SweepResult",
    "Trial",
    "TrialsFailed",
    "expand",
    "load_grid",
    "run_tasks",
    "sweep",
    "train_trial",
    "trial_name",
]

TABLES = ("base", "grid", "resources", "compare")
DEFAULT_EXECUTIONS = "layered,async-random,async-momentum"
#: a trial's run directory name longer than this is cut and given a hash of its values
MAX_NAME = 200
RAY_EXTRA = 'pip install "asyncsnn[sweep]"'


class GridError(ValueError):
    """A grid file that cannot be run; the message names the file and the key."""


class TrialsFailed(RuntimeError):
    """Some tasks failed on every attempt; ``outcomes`` holds every task's outcome."""

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = list(outcomes)
        failed = [o for o in self.outcomes if o.error is not None]
        lines = "; ".join(f"{o.name}: {o.error}" for o in failed)
        super().__init__(f"{len(failed)} of {len(self.outcomes)} failed: {lines}")


# ------------------------------------------------------------------------------ the grid
@dataclass(frozen=True)
class Resources:
    """What one trial takes: ``cpus`` and ``gpus`` (Ray's resources, fractions allowed), and
    the CPUs an embedded Ray may use on this machine (``local_cpus``; ``None``: all)."""

    cpus: float = 1
    gpus: float = 0
    local_cpus: int | None = None

    def __post_init__(self) -> None:
        for name, rule in (("cpus", "> 0"), ("gpus", ">= 0")):
            v = getattr(self, name)
            number = not isinstance(v, bool) and isinstance(v, (int, float))
            if not number or not math.isfinite(v) or v < 0 or (name == "cpus" and v == 0):
                raise ValueError(f"{name} must be a number {rule}, got {v!r}")
        v = self.local_cpus
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"local_cpus must be an int >= 1, got {v!r}")
        if v is not None and self.cpus > v:
            raise ValueError(f"cpus ({self.cpus}) per trial exceed local_cpus ({v})")

    @property
    def ray(self) -> dict:
        """As Ray Tune takes them (``tune.with_resources``)."""
        return {"cpu": self.cpus, "gpu": self.gpus}

    @property
    def threads(self) -> int:
        """The threads a trial's PyTorch uses: its CPUs, at least one."""
        return max(1, int(self.cpus))


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its run directory name, its grid values (in the grid's order)
    and its whole configuration (``[base]`` with the grid values, TrainConfig keys)."""

    name: str
    values: dict
    config: dict


@dataclass(frozen=True)
class Grid:
    """A grid file, read and checked (:func:`load_grid`)."""

    path: Path
    base: dict
    axes: tuple[tuple[str, tuple], ...]
    trials: tuple[Trial, ...]
    resources: Resources = field(default_factory=Resources)
    executions: tuple = ()
    checkpoint: str = "best"
    seed: int = 0
    cost_profile: str = "loihi"

    def default_out(self) -> Path:
        """Where the runs go without ``--out``: ``runs/sweep-STEM``."""
        return Path("runs") / f"sweep-{self.path.stem}"


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise GridError(f"{path}: not a text file") from None
    except OSError as e:
        raise GridError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise GridError(f"{path}: not valid TOML ({e})") from None


def _config_keys() -> list[str]:
    from .training import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig)]


def _unknown(path: Path, where: str, key: str, known: Sequence[str]) -> GridError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return GridError(f"{path}: {where} {key!r} is not a TrainConfig key{hint}")


def load_grid(path: str | Path) -> Grid:
    """Read and check the grid file ``path``; a :class:`GridError` naming the file and the
    key for anything that cannot run (every trial's configuration is checked here, before
    anything trains)."""
    from .evaluation import Execution

    path = Path(path)
    data = _toml(path)
    for key, value in data.items():
        if key not in TABLES:
            raise GridError(
                f"{path}: unknown table {key!r}; a grid file has "
                + ", ".join(f"[{t}]" for t in TABLES)
            )
        if not isinstance(value, dict):
            raise GridError(f"{path}: {key!r} must be a table ([{key}]), got {value!r}")
    known = _config_keys()
    base = dict(data.get("base", {}))
    for key in base:
        if key not in known:
            raise _unknown(path, "[base]", key, known)
    grid = data.get("grid", {})
    if not grid:
        raise GridError(
            f"{path}: the grid is empty: [grid] needs at least one key with a list of values"
        )
    axes: list[tuple[str, tuple]] = []
    owner: dict[str, str] = {}  # TrainConfig key -> the grid key that sets it
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: [grid] {key!r} must be a non-empty list, got {values!r}")
        if key in known:
            settings = [key]
        elif all(isinstance(v, dict) for v in values):  # a bundle of settings varied together
            settings = []
            for i, table in enumerate(values):
                if not table:
                    raise GridError(f"{path}: [grid] {key!r}[{i}] is an empty table")
                for k in table:
                    if k not in known:
                        raise _unknown(path, f"[grid] {key!r}[{i}]", k, known)
                    if k not in settings:
                        settings.append(k)
        else:
            raise _unknown(path, "[grid]", key, known)
        for k in settings:
            if k in base:
                raise GridError(
                    f"{path}: {k!r} is both in [base] and in [grid]"
                    + (f" (in {key!r})" if k != key else "")
                    + "; give it in one of them"
                )
            if k in owner:
                raise GridError(
                    f"{path}: {k!r} is set by both [grid] {owner[k]!r} and [grid] {key!r}"
                )
            owner[k] = key
        for i, v in enumerate(values):
            if v in values[:i]:
                raise GridError(f"{path}: [grid] {key!r} lists {v!r} twice")
        axes.append((key, tuple(values)))
    resources = _resources(path, data.get("resources", {}))
    compare = dict(data.get("compare", {}))
    unknown = sorted(set(compare) - {"executions", "checkpoint", "seed", "cost_profile"})
    if unknown:
        raise GridError(
            f"{path}: [compare] {unknown[0]!r} is not a setting of the comparison "
            "(executions, checkpoint, seed, cost_profile)"
        )
    executions = compare.get("executions", DEFAULT_EXECUTIONS)
    if isinstance(executions, str):
        executions = executions.split(",")
    if not isinstance(executions, list) or not all(isinstance(e, str) for e in executions):
        raise GridError(
            f"{path}: [compare] 'executions' is text like {DEFAULT_EXECUTIONS!r} or a list of "
            f"such names, got {compare['executions']!r}"
        )
    try:
        hows = tuple(Execution.parse(e) for e in executions if e.strip())
    except ValueError as e:
        raise GridError(f"{path}: [compare] 'executions': {e}") from None
    if not hows:
        raise GridError(f"{path}: [compare] 'executions' names no execution")
    checkpoint = compare.get("checkpoint", "best")
    if checkpoint not in ("best", "last"):
        raise GridError(f"{path}: [compare] 'checkpoint' is 'best' or 'last', got {checkpoint!r}")
    seed = compare.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GridError(f"{path}: [compare] 'seed' must be an int >= 0, got {seed!r}")
    profile = compare.get("cost_profile", "loihi")
    try:
        from .cost import get_profile

        if not isinstance(profile, str):
            raise ValueError(f"a profile's name or a FILE.toml, got {profile!r}")
        get_profile(profile)
    except (OSError, ValueError) as e:
        raise GridError(f"{path}: [compare] 'cost_profile': {e}") from None
    trials = expand(base, axes)
    from .training import TrainConfig

    for trial in trials:
        try:
            TrainConfig.from_dict(trial.config)
        except (TypeError, ValueError) as e:
            raise GridError(f"{path}: trial {trial.name}: {e}") from None
    return Grid(
        path=path,
        base=base,
        axes=tuple(axes),
        trials=tuple(trials),
        resources=resources,
        executions=hows,
        checkpoint=checkpoint,
        seed=seed,
        cost_profile=profile,
    )


def _resources(path: Path, table: dict) -> Resources:
    unknown = sorted(set(table) - {"cpus", "gpus", "local_cpus"})
    if unknown:
        raise GridError(
            f"{path}: [resources] {unknown[0]!r} is not a resource (cpus, gpus, local_cpus)"
        )
    try:
        return Resources(**table)
    except ValueError as e:
        raise GridError(f"{path}: [resources] {e}") from None


def expand(base: dict, axes: Sequence[tuple[str, Sequence]]) -> list[Trial]:
    """The trials of a grid: the cartesian product of the axes' values, in the axes' order
    with the last axis varying fastest (as nested loops over the axes in their order). An
    axis is a TrainConfig key with its values, or a name with tables of settings varied
    together (each table's settings join the trial)."""
    trials = []
    for combination in itertools.product(*(values for _, values in axes)):
        values: dict = {}
        for (key, _), value in zip(axes, combination, strict=True):
            if isinstance(value, dict):
                values.update(value)
            else:
                values[key] = value
        trials.append(Trial(name=trial_name(values), values=values, config={**base, **values}))
    names = [t.name for t in trials]
    clash = {n for n in names if names.count(n) > 1}
    if clash:  # values that differ only in characters a file name cannot hold
        trials = [
            dataclasses.replace(t, name=f"{t.name}-{_digest(t.values)}") if t.name in clash else t
            for t in trials
        ]
    return trials


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "-".join(_text(v) for v in value) if value else "none"
    if isinstance(value, float):
        return repr(value)
    return _UNSAFE.sub("_", str(value)) or "_"


def _digest(values: dict) -> str:
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def trial_name(values: dict) -> str:
    """A trial's run directory name: ``key=value`` pairs of its grid values joined by commas,
    in the grid's order (``training=unlayered,scheduler=momentum,seed=1``). A list is written
    with dashes (``hidden=128-128``), any character a file name should not hold as ``_``; a
    name longer than :data:`MAX_NAME` is cut and ends with a hash of the values.

    >>> trial_name({"training": "unlayered", "lr": 0.0005, "hidden": [128, 128]})
    'training=unlayered,lr=0.0005,hidden=128-128'
    """
    name = ",".join(f"{k}={_text(v)}" for k, v in values.items())
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{_digest(values)}"
    return name


# ------------------------------------------------------------------------------ one trial
def finished(run_dir: str | Path) -> bool:
    """Whether a run directory holds a finished training: its best checkpoint exists and it
    is not unfinished (:func:`asyncsnn.training.unfinished`)."""
    from .rundir import RunDir
    from .training import unfinished

    return RunDir(run_dir).checkpoint("best").is_file() and unfinished(run_dir) is None


def train_trial(task: dict) -> dict:
    """Train one trial (``task``: ``config``, ``run_dir``): skip it where finished, resume it
    where its run directory holds a training, else start it. Returns ``trained`` (whether it
    trained now), ``seconds`` and the best ``val_accuracy``."""
    from .reproduce import _splits
    from .rundir import RunDir
    from .training import TrainConfig, Trainer

    run_dir = Path(task["run_dir"])
    start = time.perf_counter()
    trained = not finished(run_dir)
    if trained:
        cfg = TrainConfig.from_dict(task["config"])
        Trainer(cfg, run_dir, quiet=True, splits=_splits(cfg)).fit(
            resume=RunDir(run_dir).holds_run()
        )
    best = json.loads(RunDir(run_dir).checkpoint_json("best").read_text())
    return {
        "trained": trained,
        "seconds": time.perf_counter() - start,
        "val_accuracy": best.get("best_val_accuracy"),
        "epoch": best.get("epoch"),
    }


# ------------------------------------------------------------------------------ executors
@dataclass
class Outcome:
    """What became of one task: its ``result`` (``work``'s return value), or the ``error`` of
    its last attempt (``"Type: message"``), after ``attempts`` attempts."""

    index: int
    name: str
    result: Any = None
    error: str | None = None
    attempts: int = 0


def _import_ray():
    """``(ray, ray.tune)``, or ``None`` where Ray is not installed."""
    try:
        import ray
        from ray import tune
    except ImportError:
        return None
    return ray, tune


def ray_available() -> bool:
    return _import_ray() is not None


def _error_text(err: BaseException) -> str:
    """``Type: message`` of the exception a task raised (Ray wraps it; its cause is read)."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        err = cause
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}".rstrip(": ")


def run_tasks(
    tasks: Sequence,
    work: Callable[[Any], Any],
    *,
    names: Sequence[str] | None = None,
    executor: str = "auto",
    address: str | None = None,
    resources: Resources | None = None,
    retries: int = 1,
    storage: str | Path | None = None,
    done: Callable[[int, Any], None] | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """``work(task)`` for each task; one :class:`Outcome` each, in the tasks' order.

    ``executor``: ``"ray"`` (each task one trial of a Ray Tune grid search), ``"sequential"``
    (one after another in this process) or ``"auto"`` (Ray where installed, else sequential,
    said once through ``warn``). ``address``: a Ray cluster (``"auto"``, ``"ray://HOST:PORT"``);
    without it Ray is embedded, started here with ``resources.local_cpus`` CPUs (and stopped
    afterwards), unless this process already runs one. Each task that raises is tried again
    ``retries`` times (its work must go on where the failed attempt stopped); ``done(i,
    result)`` is called as each task succeeds. ``storage``: the folder of Ray Tune's own files
    (kept only where a task failed: its logs).
    """
    names = [str(i) for i in range(len(tasks))] if names is None else list(names)
    resources = resources or Resources()
    warn = warn or (lambda line: print(line, file=sys.stderr))
    if executor not in ("auto", "ray", "sequential"):
        raise ValueError(f"the executor is 'auto', 'ray' or 'sequential', got {executor!r}")
    if executor == "sequential" and address is not None:
        raise ValueError("an address names a Ray cluster: it needs the Ray executor")
    if executor != "sequential" and not tasks:
        return []
    if executor != "sequential" and _import_ray() is None:
        if executor == "ray" or address is not None:
            raise ImportError(f"running on Ray needs Ray: {RAY_EXTRA}")
        warn(
            f"Ray is not installed ({RAY_EXTRA}): running the {len(tasks)} task(s) one after "
            "another in this process"
        )
        executor = "sequential"
    if executor == "sequential":
        return _run_sequential(tasks, work, names, retries, done, say)
    return _run_ray(tasks, work, names, address, resources, retries, storage, done, say)


def _run_sequential(tasks, work, names, retries, done, say) -> list[Outcome]:
    outcomes = []
    for i, task in enumerate(tasks):
        outcome = Outcome(i, names[i])
        while outcome.attempts <= retries:
            outcome.attempts += 1
            try:
                outcome.result = work(task)
            except Exception as e:  # a task's own error; Ctrl-C goes on
                outcome.error = _error_text(e)
                if outcome.attempts <= retries:
                    say(f"{names[i]}: attempt {outcome.attempts} failed ({outcome.error}); again")
                continue
            outcome.error = None
            break
        outcomes.append(outcome)
        if outcome.error is None and done is not None:
            done(i, outcome.result)
    return outcomes


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    import logging

    saved = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def start_ray(address: str | None = None, local_cpus: int | None = None):
    """Connect to the Ray cluster at ``address``, or start an embedded Ray in this process
    with ``local_cpus`` CPUs (default: all of this machine's), no dashboard; returns the
    ``ray`` module."""
    found = _import_ray()
    if found is None:
        raise ImportError(f"running on Ray needs Ray: {RAY_EXTRA}")
    ray, _ = found
    import logging

    if address is not None:  # a cluster: its workers' output comes back here
        ray.init(address=address)
    else:
        ray.init(
            num_cpus=local_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    return ray


def _trial(config: dict, tasks, work, cwd: str, threads: int) -> dict:
    """One Ray Tune trial: task ``config["task"]`` run by ``work`` in the driver's folder."""
    if os.path.isdir(cwd):  # relative paths mean what they mean where the sweep started
        os.chdir(cwd)
    import torch

    torch.set_num_threads(threads)
    result = work(tasks[config["task"]])
    return {"outcome": base64.b64encode(pickle.dumps(result)).decode("ascii")}


def _outcome_of(metrics: dict | None):
    return pickle.loads(base64.b64decode(metrics["outcome"]))


def _run_ray(tasks, work, names, address, resources, retries, storage, done, say):
    ray, tune = _import_ray()
    started = not ray.is_initialized()
    if started:
        start_ray(address, resources.local_cpus)
    have = ray.cluster_resources()
    if not started:
        where = "the Ray this process already runs"
    elif address is None:
        where = "an embedded Ray on this machine"
    else:
        where = f"the Ray cluster at {address}"
    say(
        f"running {len(tasks)} trial(s) on {where} ({have.get('CPU', 0):g} CPUs, "
        f"{have.get('GPU', 0):g} GPUs; each trial {resources.cpus:g} CPU(s), "
        f"{resources.gpus:g} GPU(s))"
    )
    try:
        if address is None:
            for key, want in (("CPU", resources.cpus), ("GPU", resources.gpus)):
                if want > have.get(key, 0):
                    raise ValueError(
                        f"a trial asks for {want:g} {key}(s), but this machine's Ray has "
                        f"{have.get(key, 0):g}; lower [resources] or give a cluster (--address)"
                    )
        return _tune(ray, tune, tasks, work, names, resources, retries, storage, done, say)
    finally:
        if started:
            ray.shutdown()


def _tune(ray, tune, tasks, work, names, resources, retries, storage, done, say):
    import tempfile

    from ray.tune import Callback

    safe = [re.sub(r"[^A-Za-z0-9._+=,-]", "_", n)[:MAX_NAME] for n in names]  # Tune's folders
    attempts = [0] * len(tasks)

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            attempts[trial.config["task"]] += 1

        def on_trial_recover(self, iteration, trials, trial, **info):
            i = trial.config["task"]
            err = None
            # Ray Tune's own file of the error: reading it is a courtesy
            with contextlib.suppress(Exception), open(trial.pickled_error_file, "rb") as f:
                err = pickle.load(f)
            why = f" ({_error_text(err)})" if isinstance(err, BaseException) else ""
            say(f"{names[i]}: attempt {attempts[i]} failed{why}; again")

        def on_trial_complete(self, iteration, trials, trial, **info):
            i = trial.config["task"]
            if done is not None and trial.last_result and "outcome" in trial.last_result:
                done(i, _outcome_of(trial.last_result))

    if storage is None:
        root = Path(tempfile.mkdtemp(prefix="asyncsnn-tune-"))
    else:
        root = Path(storage).resolve()
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial, tasks=list(tasks), work=work, cwd=os.getcwd(), threads=resources.threads
        ),
        resources.ray,
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"task": tune.grid_search(list(range(len(tasks))))},
        tune_config=tune.TuneConfig(
            trial_name_creator=lambda t: safe[t.config["task"]],
            trial_dirname_creator=lambda t: safe[t.config["task"]],
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root),
            failure_config=tune.FailureConfig(max_failures=retries),
            callbacks=[Progress()],
            verbose=0,
        ),
    )
    # Ray Tune's loggers, progress tables and tracebacks add nothing to asyncsnn's own lines
    # and files (a failed trial's traceback stays in its error.txt, under ``storage``)
    with (
        _environ(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_AIR_NEW_OUTPUT="0"),
        _quiet("ray.tune", "ray.train", "ray.air"),
    ):
        results = tuner.fit()
    outcomes = [Outcome(i, names[i], attempts=max(attempts[i], 1)) for i in range(len(tasks))]
    for result in results:
        i = result.config["task"]
        if result.error is not None:
            outcomes[i].error = _error_text(result.error)
        elif result.metrics and "outcome" in result.metrics:
            outcomes[i].result = _outcome_of(result.metrics)
        else:
            outcomes[i].error = "the trial stopped without a result (interrupted?)"
    if any(o.error is not None for o in outcomes):
        say(f"Ray Tune's logs of the failed trials: {root / name}")
    elif storage is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        shutil.rmtree(root / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()
    return outcomes


# ------------------------------------------------------------------------------ the sweep
@dataclass
class SweepResult:
    """A sweep's trials (``grid.trials``), what became of each (``status``: ``finished
    before``, ``trained``, ``failed``), the failed ones' outcomes and the comparison rows of
    every finished trial (:func:`asyncsnn.report.compare`)."""

    grid: Grid
    out: Path
    status: dict[str, str]
    failed: list[Outcome]
    rows: list[dict]
    executor: str

    @property
    def table(self) -> str:
        from .report import text_table

        return text_table(self.rows)

    @property
    def note(self) -> str:
        profile = self.rows[0]["cost_profile"] if self.rows else self.grid.cost_profile
        return f"Energy and time under the cost profile {profile} (docs/cost.md).\n"


def plan(grid: Grid, out: Path) -> list[tuple[Trial, Path, str]]:
    """Each trial with its run directory and what it needs: ``finished`` (skipped),
    ``resume`` (a half-finished training) or ``train``. A run directory holding a training
    with other settings than its trial's is an error."""
    from .reproduce import _check_recorded
    from .rundir import RunDir

    planned = []
    for trial in grid.trials:
        run_dir = out / trial.name
        _check_recorded(run_dir, trial.config)
        if finished(run_dir):
            state = "finished"
        elif RunDir(run_dir).holds_run():
            state = "resume"
        else:
            state = "train"
        planned.append((trial, run_dir, state))
    return planned


def sweep(
    grid: Grid | str | Path,
    out: str | Path | None = None,
    *,
    address: str | None = None,
    executor: str = "auto",
    local_cpus: int | None = None,
    say: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run the grid into ``out`` (default ``runs/sweep-STEM``): train the trials not finished
    (through :func:`run_tasks`), then compare every finished trial under the grid's
    executions; ``results.json``, ``results.md`` and the plots go into ``out``. ``local_cpus``
    overrides the grid's ``[resources] local_cpus``. A trial that failed on every attempt is
    in :attr:`SweepResult.failed`; the others are compared all the same."""
    from .report import compare, write_results

    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    out = Path(out) if out is not None else grid.default_out()
    resources = grid.resources
    if local_cpus is not None:
        resources = dataclasses.replace(resources, local_cpus=local_cpus)
    planned = plan(grid, out)
    todo = [(t, d, s) for t, d, s in planned if s != "finished"]
    n_before = len(planned) - len(todo)
    say(
        f"{len(planned)} trials in {out}: {n_before} finished before, "
        f"{sum(s == 'resume' for *_, s in todo)} to resume, {sum(s == 'train' for *_, s in todo)} "
        "to train"
    )
    count = 0

    def done(i: int, result: dict) -> None:
        nonlocal count
        count += 1
        trial = todo[i][0]
        acc = result.get("val_accuracy")
        shown = f"{acc:.3f}" if isinstance(acc, float) else "-"
        say(
            f"[{count}/{len(todo)}] {trial.name}: trained {result['seconds']:.0f} s, best "
            f"validation accuracy {shown} (epoch {result.get('epoch')})"
        )

    tasks = [{"config": t.config, "run_dir": str(d.resolve())} for t, d, _ in todo]
    used = executor
    if tasks:
        if executor == "auto":
            used = "ray" if ray_available() else "sequential"
        outcomes = run_tasks(
            tasks,
            train_trial,
            names=[t.name for t, _, _ in todo],
            executor=executor,
            address=address,
            resources=resources,
            storage=out / ".tune",
            done=done,
            say=say,
            warn=warn,
        )
    else:
        outcomes = []
    ran = {o.name: "trained" if o.error is None else "failed" for o in outcomes}
    status = {t.name: ran.get(t.name, "finished before") for t, _, _ in planned}
    failed = [o for o in outcomes if o.error is not None]
    runs = {t.name: d for t, d, _ in planned if status.get(t.name) != "failed"}
    rows = compare(
        runs,
        grid.executions,
        which=grid.checkpoint,
        seed=grid.seed,
        cost_profile=grid.cost_profile,
    )
    result = SweepResult(grid, out, status, failed, rows, used)
    if rows:
        write_results(rows, out, title=f"asyncsnn sweep {grid.path.name}", notes=result.note)
    return result
