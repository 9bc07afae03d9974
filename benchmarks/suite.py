"""asyncsnn against snnTorch: plan the configurations, run each in its own process, report.

``python -m benchmarks`` measures, on real events, for every network of
:mod:`benchmarks.workloads`:

- asyncsnn asynchronous execution (random, momentum and fifo policies, F = 8), per backend of
  ``asyncsnn.run`` (the compiled numba kernel and the PyTorch engine, where both exist);
- asyncsnn layered execution;
- snnTorch layered on the same weights;

for inference at batch 1 and 32 (the DVS clips: 1 and 10) and, on the fully connected and the
convolutional network, one training step at batch 32 (forward, cross-entropy on output
spike counts, backward, Adam; on the first backend): ms per sample, synaptic
events per second, peak resident memory, the extra peak memory of the work, and the ratios to
snnTorch. Each configuration runs in a fresh process (:mod:`benchmarks.worker`) with
``OMP_WAIT_POLICY=PASSIVE``; the figures are medians of repetitions, wall and process CPU
time. ``--rounds N`` (default 3, ``--quick`` 1) measures every configuration N times, the
engines of one network, mode and batch one after another (:func:`schedule`), so that each
round gives each engine's ratio to snnTorch from neighbours in time; the report gives the
median of the rounds and their spread (:func:`add_ratios`). It writes ``results/latest.json``
and ``results/latest.md`` beside this file (``--out`` to change).

``--against REV`` (a git revision, checked out into a temporary worktree, or the path of
another checkout) is the A/B mode: the same configurations of this tree ("new") and of that
one ("old"), each worker with its tree's ``src`` first on ``PYTHONPATH`` and this tree's
harness, a configuration's two trees back to back in every round, and the paired new/old
ratios per round with their median and spread (:func:`paired`); it writes
``results/latest-ab.{json,md}``.

``--device cuda`` measures the GPU rows instead (:func:`plan_gpu`): asynchronous inference
through the Triton kernel (``backend="triton"``) and through the PyTorch engine, layered
execution and snnTorch on the same GPU and the same weights, at batch 32, 256 and 1024, and a
training step at each batch; memory is the GPU's. It needs a CUDA GPU and says so otherwise;
it writes ``results/latest-cuda.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path

from .workloads import DVS_TIMESTEPS, NETWORKS, NMNIST_TIMESTEPS

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = HERE / "results"
POLICIES = ("random", "momentum", "fifo")
ENGINE_ORDER = {"asyncsnn-async": 0, "asyncsnn-layered": 1, "snntorch": 2}
MODE_ORDER = {"inference": 0, "train": 1}

#: measurement effort: distinct samples at batch 1, time budget and repetitions per
#: configuration, and the DVS run's clips and timesteps (20 ms each)
EFFORT = {
    "full": {
        "samples": 8,
        "budget_s": 3.0,
        "min_repeats": 3,
        "max_repeats": 30,
        "dvs_samples": 4,
        "dvs_timesteps": DVS_TIMESTEPS,
        "timeout_s": 600,
    },
    "quick": {
        "samples": 2,
        "budget_s": 0.3,
        "min_repeats": 1,
        "max_repeats": 2,
        "dvs_samples": 1,
        "dvs_timesteps": 10,
        "timeout_s": 120,
    },
}

# targets (issue 27), reported, not asserted: on the fully connected network, asynchronous
# inference at batch 1 at >= 500 M synaptic events/s and at batch 32 in <= 0.5x snnTorch's
# time (the convolutional one <= 0.75x), the unlayered training step at batch 32 in <= 0.75x
# snnTorch's time with <= 1.5x its extra peak memory; the DVS clips at batch 10 <= 1.5x
TARGET_EVENTS_B1 = 500e6
TARGET_RATIO_B32 = 0.5
TARGET_RATIO_B32_CONV = 0.75
TARGET_TRAIN_TIME = 0.75
TARGET_TRAIN_MEMORY = 1.5
TARGET_RATIO_DVS = 1.5
# the GPU's targets (issue 15): at batch 256, asynchronous inference at >= 10 G synaptic
# events/s and no slower than snnTorch layered; a training step <= 2x snnTorch's BPTT step,
# extra GPU memory <= 2x
GPU_BATCHES = (32, 256, 1024)
GPU_TARGET_BATCH = 256
GPU_TARGET_EVENTS = 10e9
GPU_TARGET_RATIO = 1.0
GPU_TARGET_TRAIN_TIME = 2.0
GPU_TARGET_TRAIN_MEMORY = 2.0


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    network: str
    engine: str
    mode: str
    batch: int
    policy: str | None = None
    backend: str | None = None
    device: str = "cpu"

    @property
    def label(self) -> str:
        if self.engine == "asyncsnn-async":
            return f"async-{self.policy}" + (f"[{self.backend}]" if self.backend else "")
        return "layered" if self.engine == "asyncsnn-layered" else "snntorch"

    @property
    def name(self) -> str:
        return f"{self.network}/{self.mode}/b{self.batch}/{self.label}"

    def spec(self, effort: dict, data: Path) -> dict:
        dvs = self.network == "dvs"
        return {
            "network": self.network,
            "engine": self.engine,
            "mode": self.mode,
            "batch": self.batch,
            "policy": self.policy,
            "backend": self.backend,
            "samples": effort["dvs_samples"] if dvs else effort["samples"],
            "timesteps": effort["dvs_timesteps"] if dvs else NMNIST_TIMESTEPS,
            "budget_s": effort["budget_s"],
            "min_repeats": effort["min_repeats"],
            "max_repeats": effort["max_repeats"],
            "data": str(data),
            "seed": 0,
            "device": self.device,
        }


@dataclass(frozen=True)
class Tree:
    """A checkout whose ``src/asyncsnn`` a worker measures: ``new`` (this one) or ``old``
    (the A/B mode's other one); ``rev`` says which commit it holds."""

    name: str
    root: Path
    rev: str | None = None

    @property
    def src(self) -> Path:
        return self.root / "src"


def group_of(cfg: Config) -> tuple:
    """The configurations compared with one another: one network, mode, batch and device."""
    return (cfg.network, cfg.mode, cfg.batch, cfg.device)


# ------------------------------------------------------------------------------ planning
def available_backends() -> list[str | None]:
    """``asyncsnn.run``'s backends to report: ``[None]`` where it has no ``backend``
    argument, else ``numba`` (where the kernel can be imported) and ``torch``."""
    import dataclasses
    import inspect

    import asyncsnn

    settings = getattr(asyncsnn, "RunSettings", None)  # the settings of a run, by name
    names = (
        {f.name for f in dataclasses.fields(settings)}
        if settings is not None
        else set(inspect.signature(asyncsnn.run).parameters)
    )
    if "backend" not in names:
        return [None]
    try:
        from asyncsnn.kernels import numba_available
    except ImportError:
        return ["torch"]
    return ["numba", "torch"] if numba_available() else ["torch"]


def plan(quick: bool, networks: list[str], backends: list[str | None]) -> list[Config]:
    """The configurations of a run, in the order they are measured. Training steps run on
    the first backend only (the PyTorch engine's unlayered step on ``conv`` takes about 7 GB
    and 9 s at batch 32: ``--backends torch`` measures it)."""
    first = backends[0]
    out: list[Config] = []

    def add(network, engine, mode, batch, policy=None, backend=None):
        if network in networks:
            out.append(Config(network, engine, mode, batch, policy, backend))

    def compare(network, mode, batch, policies, async_backends, layered=True):
        for policy in policies:
            for backend in async_backends:
                add(network, "asyncsnn-async", mode, batch, policy, backend)
        if layered:
            add(network, "asyncsnn-layered", mode, batch)
        add(network, "snntorch", mode, batch)

    if quick:
        for batch in (1, 32):
            compare("fc", "inference", batch, ["momentum"], [first])
        compare("fc", "train", 32, ["momentum"], [first])
        compare("conv", "inference", 32, ["momentum"], [first], layered=False)
        compare("dvs", "inference", 1, ["momentum"], [first], layered=False)
        return out
    for network in ("fc", "conv"):
        for batch in (1, 32):
            compare(network, "inference", batch, POLICIES, backends)
        compare(network, "train", 32, ["momentum"], [first])
    # the PyTorch engine takes about 12 s per DVS clip (60x the kernel): first backend only
    for batch in (1, 10):
        compare("dvs", "inference", batch, POLICIES, [first])
    compare("dvs", "train", 10, ["momentum"], [first])  # a long sequence: 72 timesteps
    return out


def plan_gpu(quick: bool, networks: list[str]) -> list[Config]:
    """The GPU's configurations: asynchronous inference through the Triton kernel (every
    policy) and the PyTorch engine (momentum), layered execution and snnTorch, at batch 32,
    256 and 1024, and a training step at each batch (unlayered through the Triton kernel,
    layered, snnTorch BPTT), on the networks asked for among ``fc`` and ``conv``."""
    out: list[Config] = []
    batches = (GPU_TARGET_BATCH,) if quick else GPU_BATCHES
    policies = ("momentum",) if quick else POLICIES
    for network in ("fc", "conv"):
        if network not in networks:
            continue
        for batch in batches:
            for policy in policies:
                out.append(
                    Config(network, "asyncsnn-async", "inference", batch, policy, "triton", "cuda")
                )
            if not quick and batch == batches[0]:
                out.append(
                    Config(
                        network, "asyncsnn-async", "inference", batch, "momentum", "torch", "cuda"
                    )
                )
            out.append(Config(network, "asyncsnn-layered", "inference", batch, device="cuda"))
            out.append(Config(network, "snntorch", "inference", batch, device="cuda"))
        for batch in batches:
            out.append(
                Config(network, "asyncsnn-async", "train", batch, "momentum", "triton", "cuda")
            )
            out.append(Config(network, "asyncsnn-layered", "train", batch, device="cuda"))
            out.append(Config(network, "snntorch", "train", batch, device="cuda"))
    return out


def gpu_problem() -> str | None:
    """Why ``--device cuda`` cannot run here, or ``None``."""
    import torch

    if not torch.cuda.is_available():
        return (
            "--device cuda needs a CUDA GPU: torch sees none here (torch.cuda.is_available() "
            f"is False, torch {torch.__version__}); run it on a machine with an NVIDIA GPU, "
            "a CUDA build of PyTorch and Triton (pip install -e .[gpu])"
        )
    from asyncsnn.kernels import triton_available

    if not triton_available():
        return "--device cuda measures the Triton kernel: install Triton (pip install -e .[gpu])"
    return None


def select(configs: list[Config], patterns: list[str] | None) -> list[Config]:
    """The configurations whose name (``network/mode/bBATCH/engine``, as the report prints
    it) matches one of the shell-style ``patterns`` or equals one of them; all without."""
    if not patterns:
        return configs
    return [
        c for c in configs if any(c.name == p or fnmatch.fnmatchcase(c.name, p) for p in patterns)
    ]


def schedule(configs: list[Config], rounds: int, trees: list[Tree]) -> list[tuple]:
    """The order of the measurements, ``(round, config, tree)``: round after round, and in a
    round the groups (:func:`group_of`) one after another, so that the engines compared
    with one another are measured next to one another; inside a group the planned order on
    even rounds and the reverse on odd ones, and with two trees each configuration's two
    back to back, the tree measured first alternating from one to the next."""
    groups: dict[tuple, list[Config]] = {}
    for cfg in configs:
        groups.setdefault(group_of(cfg), []).append(cfg)
    out = []
    for r in range(rounds):
        for members in groups.values():
            for j, cfg in enumerate(members[::-1] if r % 2 else members):
                pair = trees if (r + j) % 2 == 0 else trees[::-1]
                out.extend((r, cfg, tree) for tree in pair)
    return out


def _git(*args: str, cwd: Path = REPO) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def describe(root: Path) -> str | None:
    """The commit a checkout holds, ``+`` where its tracked files differ from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD", cwd=root)
        dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=root)
    except (RuntimeError, OSError):
        return None
    return head + ("+" if dirty else "")


@contextlib.contextmanager
def other_tree(against: str) -> Iterator[Tree]:
    """The A/B mode's ``old`` tree: ``against`` as the path of a checkout (it must hold
    ``src/asyncsnn``), or else as a git revision of this repository, checked out with
    ``git worktree add`` into a temporary folder that is removed afterwards."""
    path = Path(against).expanduser()
    if path.is_dir():
        if not (path / "src" / "asyncsnn").is_dir():
            raise ValueError(f"--against {against}: a checkout holds src/asyncsnn; this has none")
        yield Tree("old", path.resolve(), describe(path))
        return
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{against}^{{commit}}")
    except RuntimeError:
        raise ValueError(
            f"--against {against}: neither a folder nor a git revision of {REPO.name}"
        ) from None
    tmp = Path(tempfile.mkdtemp(prefix="asyncsnn-ab-"))
    root = tmp / "tree"
    try:
        _git("worktree", "add", "--detach", str(root), commit)
        yield Tree("old", root, commit[:7])
    finally:
        with contextlib.suppress(RuntimeError, OSError):
            _git("worktree", "remove", "--force", str(root))
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(RuntimeError, OSError):
            _git("worktree", "prune")


# ------------------------------------------------------------------------------ running
def child_env(src: Path | None = None) -> dict:
    """A worker's environment: ``src`` (the asyncsnn to measure) and this tree's harness
    first on ``PYTHONPATH``."""
    env = dict(os.environ)
    # PyTorch's OpenMP threads spin while they wait by default, which slows a shared machine
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    first = [str(src)] if src is not None else []
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*first, str(REPO), env.get("PYTHONPATH")]))
    return env


#: the figures of a configuration that failed
FAILED = dict.fromkeys(
    ("ms_per_sample", "synaptic_events_per_s", "peak_rss_mb", "extra_peak_mb", "spikes_per_sample")
)


def run_config(cfg: Config, effort: dict, data: Path, tree: Tree | None = None) -> dict:
    """Measure ``cfg`` in a fresh process, on ``tree``'s asyncsnn (default: this one's); the
    row of the report (with ``error`` on failure)."""
    row = {
        "name": cfg.name,
        "network": cfg.network,
        "engine": cfg.engine,
        "policy": cfg.policy,
        "backend": cfg.backend,
        "mode": cfg.mode,
        "batch": cfg.batch,
    }
    spec = cfg.spec(effort, data)
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=child_env(tree.src if tree is not None else REPO / "src"),
            capture_output=True,
            text=True,
            timeout=effort["timeout_s"],
        )
    except subprocess.TimeoutExpired:
        return {**row, **FAILED, "error": f"no result within {effort['timeout_s']} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**row, **FAILED, "error": f"exit status {proc.returncode}: {tail}"}
    return {**row, **json.loads(lines[-1])}


def spread(values) -> dict | None:
    """Median, least and greatest of ``values`` (``None`` entries, failed rounds, left out);
    ``None`` where nothing is left."""
    ok = [v for v in values if v is not None]
    if not ok:
        return None
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok), "n": len(ok)}


def round_ratios(num: list, den: list) -> list:
    """``num[r] / den[r]`` per round ``r``; ``None`` where either is missing."""
    return [a / b if a is not None and b else None for a, b in zip(num, den, strict=True)]


def combine(rounds: list[dict]) -> dict:
    """One configuration's row from its rounds (one row per round, in round order): the
    medians over the successful rounds of time, CPU time and extra peak, the greatest peak,
    and every round's time (``None`` where it failed); the last failure where none
    succeeded."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]

    def median(key):
        values = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(values) if values else None

    ms = median("ms_per_sample")
    row = {**ok[-1]}
    row.update(
        ms_per_sample=ms,
        cpu_ms_per_sample=median("cpu_ms_per_sample"),
        extra_peak_mb=median("extra_peak_mb"),
        peak_rss_mb=max(r["peak_rss_mb"] for r in ok),
        synaptic_events_per_s=row["synops_per_sample"] / (ms / 1e3),
        rounds_ms_per_sample=[None if "error" in r else r["ms_per_sample"] for r in rounds],
        rounds_cpu_ms_per_sample=[
            None if "error" in r else r.get("cpu_ms_per_sample") for r in rounds
        ],
        rounds_extra_peak_mb=[None if "error" in r else r["extra_peak_mb"] for r in rounds],
    )
    return row


def add_ratios(rows: list[dict]) -> None:
    """``ratio_to_snntorch`` and ``extra_peak_ratio_to_snntorch`` of every row against the
    snnTorch row of the same network, mode and batch (``None`` where missing, and the memory
    ratio where snnTorch's extra peak is under 1 MiB: a ratio to noise).

    Where the rows hold rounds (:func:`combine`), the time ratio is taken per round, against
    snnTorch's time of the same round (measured next to it), and ``ratio_to_snntorch`` is the
    median of those ratios, with all of them in ``ratio_to_snntorch_rounds`` and their least
    and greatest in ``ratio_to_snntorch_min`` / ``_max``."""
    refs = {
        (r["network"], r["mode"], r["batch"], r.get("device", "cpu")): r
        for r in rows
        if r["engine"] == "snntorch" and "error" not in r
    }
    for r in rows:
        ref = refs.get((r["network"], r["mode"], r["batch"], r.get("device", "cpu")))
        ok = ref is not None and "error" not in r
        mine = r.get("rounds_ms_per_sample") or [r["ms_per_sample"]]
        theirs = (ref or {}).get("rounds_ms_per_sample") or [(ref or {}).get("ms_per_sample")]
        per_round = round_ratios(mine, theirs) if ok and len(mine) == len(theirs) else []
        s = spread(per_round)
        if ok and s is None:  # rounds that never succeeded together: the medians' ratio
            s = spread([r["ms_per_sample"] / ref["ms_per_sample"]])
        r["ratio_to_snntorch"] = s and s["median"]
        r["ratio_to_snntorch_min"] = s and s["min"]
        r["ratio_to_snntorch_max"] = s and s["max"]
        r["ratio_to_snntorch_rounds"] = per_round
        r["extra_peak_ratio_to_snntorch"] = (
            r["extra_peak_mb"] / ref["extra_peak_mb"] if ok and ref["extra_peak_mb"] >= 1 else None
        )


def paired(new: dict, old: dict) -> dict:
    """The A/B figures of one configuration from its rows in the two trees (:func:`combine`):
    new/old time per round (the two measured back to back) with median and spread, the same
    for CPU time, and both trees' medians and extra peaks."""
    ok = "error" not in new and "error" not in old
    time = round_ratios(new["rounds_ms_per_sample"], old["rounds_ms_per_sample"]) if ok else []
    cpu = (
        round_ratios(new["rounds_cpu_ms_per_sample"], old["rounds_cpu_ms_per_sample"]) if ok else []
    )
    return {
        "name": new["name"],
        "network": new["network"],
        "mode": new["mode"],
        "batch": new["batch"],
        "label": new.get("label"),
        "new_ms_per_sample": new.get("ms_per_sample"),
        "old_ms_per_sample": old.get("ms_per_sample"),
        "new_over_old_rounds": time,
        "new_over_old": spread(time),
        "cpu_new_over_old_rounds": cpu,
        "cpu_new_over_old": spread(cpu),
        "new_extra_peak_mb": new.get("extra_peak_mb"),
        "old_extra_peak_mb": old.get("extra_peak_mb"),
        "new_ratio_to_snntorch": new.get("ratio_to_snntorch"),
        "old_ratio_to_snntorch": old.get("ratio_to_snntorch"),
        "error": new.get("error") or old.get("error"),
    }


def _find(rows, network, mode, batch, engine, policy=None, backend=None):
    for r in rows:
        if (r["network"], r["mode"], r["batch"], r["engine"]) == (network, mode, batch, engine):
            if policy is not None and r["policy"] != policy:
                continue
            if engine == "asyncsnn-async" and mode == "inference" and r["backend"] != backend:
                continue
            return r if "error" not in r else None
    return None


def _ratio_text(r: dict) -> str:
    lo, hi = r.get("ratio_to_snntorch_min"), r.get("ratio_to_snntorch_max")
    spread = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None and lo != hi else ""
    return f"{r['ratio_to_snntorch']:.2f}x{spread}"


def evaluate_targets(rows: list[dict], backend: str | None) -> list[dict]:
    """The targets of issue 27, each met, not met or ``None`` (not measured); time ratios are
    medians of the rounds' ratios to snnTorch. Inference targets use ``backend``, the fastest
    one asyncsnn offers."""
    out = []
    for policy in POLICIES:
        r = _find(rows, "fc", "inference", 1, "asyncsnn-async", policy, backend)
        v = r and r["synaptic_events_per_s"]
        out.append(
            {
                "target": f"fc async {policy} inference, batch 1: >= 500 M synaptic events/s",
                "value": None if r is None else f"{v / 1e6:.1f} M/s",
                "met": None if r is None else v >= TARGET_EVENTS_B1,
            }
        )
    ratio_targets = [
        ("fc", "inference", 32, TARGET_RATIO_B32),
        ("conv", "inference", 32, TARGET_RATIO_B32_CONV),
        ("dvs", "inference", 10, TARGET_RATIO_DVS),
    ]
    for network, mode, batch, limit in ratio_targets:
        for policy in POLICIES:
            r = _find(rows, network, mode, batch, "asyncsnn-async", policy, backend)
            v = r and r["ratio_to_snntorch"]
            out.append(
                {
                    "target": f"{network} async {policy} {mode}, batch {batch}: time <= "
                    f"{limit}x snnTorch's",
                    "value": None if v is None else _ratio_text(r),
                    "met": None if v is None else v <= limit,
                }
            )
    r = _find(rows, "fc", "train", 32, "asyncsnn-async", "momentum")
    t = r and r["ratio_to_snntorch"]
    m = r and r["extra_peak_ratio_to_snntorch"]
    out.append(
        {
            "target": "fc unlayered training step (momentum), batch 32: time <= 0.75x "
            "snnTorch's and extra peak memory <= 1.5x snnTorch's",
            "value": None if t is None or m is None else f"time {_ratio_text(r)}, memory {m:.2f}x",
            "met": None
            if t is None or m is None
            else (t <= TARGET_TRAIN_TIME and m <= TARGET_TRAIN_MEMORY),
        }
    )
    return out


def evaluate_gpu_targets(rows: list[dict]) -> list[dict]:
    """The GPU's targets on the fully connected network at batch 256, each met, not met or
    ``None`` (not measured): Triton inference (every policy) at >= 10 G synaptic events/s
    and no slower than snnTorch, the unlayered training step <= 2x snnTorch's BPTT step in
    time and extra GPU memory."""
    out = []
    b = GPU_TARGET_BATCH
    for policy in POLICIES:
        r = _find(rows, "fc", "inference", b, "asyncsnn-async", policy, "triton")
        v = r and r["synaptic_events_per_s"]
        t = r and r["ratio_to_snntorch"]
        out.append(
            {
                "target": f"GPU async {policy} inference, batch {b}: >= 10 G synaptic "
                "events/s and time <= 1.0x snnTorch's",
                "value": None if r is None else f"{v / 1e9:.2f} G/s, {t:.2f}x",
                "met": None if r is None else v >= GPU_TARGET_EVENTS and t <= GPU_TARGET_RATIO,
            }
        )
    r = _find(rows, "fc", "train", b, "asyncsnn-async", "momentum")
    t = r and r["ratio_to_snntorch"]
    m = r and r["extra_peak_ratio_to_snntorch"]
    out.append(
        {
            "target": f"GPU unlayered training step (momentum), batch {b}: time <= 2x "
            "snnTorch's BPTT and extra GPU memory <= 2x",
            "value": None if t is None or m is None else f"time {t:.2f}x, memory {m:.2f}x",
            "met": None
            if t is None or m is None
            else (t <= GPU_TARGET_TRAIN_TIME and m <= GPU_TARGET_TRAIN_MEMORY),
        }
    )
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    return {
        "date": date.today().isoformat(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "snntorch": _version("snntorch"),
        "numba": _version("numba"),
        "asyncsnn": _version("asyncsnn"),
        "triton": _version("triton"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------ reports
def _sort_key(r: dict):
    return (
        NETWORKS.index(r["network"]),
        MODE_ORDER[r["mode"]],
        r["batch"],
        ENGINE_ORDER[r["engine"]],
        POLICIES.index(r["policy"]) if r["policy"] in POLICIES else -1,
        str(r["backend"]),
    )


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _spread_text(s: dict | None) -> str:
    if s is None:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.2f}"
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def _command(meta: dict) -> str:
    flags = " --quick" if meta["quick"] else ""
    flags += f" --rounds {meta['rounds']}"
    if meta.get("device") == "cuda":
        flags += " --device cuda"
    if meta.get("networks") and list(meta["networks"]) != list(NETWORKS):
        flags += " --networks " + " ".join(meta["networks"])
    if meta.get("backends_asked"):
        flags += " --backends " + " ".join(meta["backends_asked"])
    if meta.get("only"):
        flags += " --only " + " ".join(f"'{p}'" for p in meta["only"])
    if meta.get("against"):
        flags += f" --against {meta['against']}"
    return f"`python -m benchmarks{flags}`"


def _where(report: dict) -> str:
    meta = report["meta"]
    where = f"CPU: {meta['cores']} cores ({meta['cpu']})"
    if meta.get("device") == "cuda":
        gpu = next((r.get("gpu") for r in report["configs"] if r.get("gpu")), None)
        where = f"GPU: {gpu}, Triton {meta.get('triton')}; {where}"
    load = meta.get("load_average")
    return (
        f"{where}, PyTorch {meta['torch']}, snnTorch {meta['snntorch']}, numba "
        f"{meta['numba'] or 'absent'}, {meta['date']}, load average {load[0]:.1f} at the start"
        if load
        else f"{where}, PyTorch {meta['torch']}, snnTorch {meta['snntorch']}, numba "
        f"{meta['numba'] or 'absent'}, {meta['date']}"
    )


def markdown(report: dict) -> str:
    meta = report["meta"]
    rounds = meta["rounds"]
    how = (
        f"Medians of {rounds} rounds (each a median of repetitions), the engines of a "
        "configuration measured one after another in each round; time vs snnTorch is the "
        "median of the rounds' ratios [least, greatest]"
        if rounds > 1
        else "Medians of repetitions"
    )
    lines = [
        f"{_where(report)}, {_command(meta)} in {meta['wall_s']:.0f} s. "
        f"{how}, one process per configuration and round.",
        "",
        "| network | mode | batch | engine | ms / sample | CPU ms / sample | "
        "synaptic events / s | spikes / sample | peak RSS MiB | extra peak MiB | "
        "time vs snnTorch | extra memory vs snnTorch |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["configs"]:
        head = f"| {r['network']} | {r['mode']} | {r['batch']} | {r['label']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} ||||||||")
            continue
        ratio = (
            {
                "median": r["ratio_to_snntorch"],
                "min": r.get("ratio_to_snntorch_min"),
                "max": r.get("ratio_to_snntorch_max"),
                "n": sum(v is not None for v in r.get("ratio_to_snntorch_rounds") or [1]),
            }
            if r["ratio_to_snntorch"] is not None
            else None
        )
        lines.append(
            f"{head} {_num(r['ms_per_sample'], '.3f')} | "
            f"{_num(r.get('cpu_ms_per_sample'), '.3f')} | "
            f"{r['synaptic_events_per_s'] / 1e6:.1f} M | {r['spikes_per_sample']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['extra_peak_mb']:.1f} | "
            f"{_spread_text(ratio)} | "
            f"{_num(r['extra_peak_ratio_to_snntorch'], '.2f')} |"
        )
    lines += ["", "Targets:", ""]
    if not report["targets"]:
        lines.append("- none measured")
    for t in report["targets"]:
        verdict = {True: "met", False: "not met", None: "not measured"}[t["met"]]
        value = f" ({t['value']})" if t["value"] else ""
        lines.append(f"- {t['target']}: **{verdict}**{value}")
    return "\n".join(lines) + "\n"


def markdown_ab(report: dict) -> str:
    """The A/B table: per configuration, both trees' medians, new/old per round and its
    median [least, greatest], in wall and CPU time, and the extra peaks."""
    meta = report["meta"]
    trees = meta["trees"]
    lines = [
        f"{_where(report)}, {_command(meta)} in {meta['wall_s']:.0f} s. new: "
        f"{trees['new']['rev'] or trees['new']['root']}, old: "
        f"{trees['old']['rev'] or trees['old']['root']}; {meta['rounds']} rounds, a "
        "configuration's two trees measured back to back in each (one process each); "
        "new/old is the median of the rounds' ratios [least, greatest].",
        "",
        "| network | mode | batch | engine | new ms / sample | old ms / sample | "
        "new / old per round | new / old | CPU new / old | extra peak MiB new / old | "
        "vs snnTorch new / old |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for a in report["ab"]:
        head = f"| {a['network']} | {a['mode']} | {a['batch']} | {a['label']} |"
        if a.get("error"):
            lines.append(f"{head} failed: {a['error']} |||||||")
            continue
        per_round = ", ".join(_num(v, ".2f") for v in a["new_over_old_rounds"])
        lines.append(
            f"{head} {_num(a['new_ms_per_sample'], '.3f')} | "
            f"{_num(a['old_ms_per_sample'], '.3f')} | {per_round} | "
            f"**{_spread_text(a['new_over_old'])}** | {_spread_text(a['cpu_new_over_old'])} | "
            f"{_num(a['new_extra_peak_mb'], '.1f')} / {_num(a['old_extra_peak_mb'], '.1f')} | "
            f"{_num(a['new_ratio_to_snntorch'], '.2f')} / "
            f"{_num(a['old_ratio_to_snntorch'], '.2f')} |"
        )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main
def _progress(configs):
    from tqdm import tqdm

    return tqdm(configs, file=sys.stderr, disable=None, unit="config", leave=False)


def _log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def measure_all(
    configs: list[Config], rounds: int, trees: list[Tree], effort: dict, data: Path
) -> dict[tuple[str, Config], list[dict]]:
    """Run :func:`schedule`'s measurements; every configuration's rows per tree, in round
    order."""
    measured: dict[tuple[str, Config], list[dict]] = {
        (t.name, cfg): [] for t in trees for cfg in configs
    }
    tag = len(trees) > 1
    for r, cfg, tree in _progress(schedule(configs, rounds, trees)):
        row = run_config(cfg, effort, data, tree)
        row.update(label=cfg.label, round=r, tree=tree.name)
        measured[(tree.name, cfg)].append(row)
        name = f"{cfg.name} ({tree.name})" if tag else cfg.name
        if "error" in row:
            _log(f"{name:<54} FAILED {row['error']}")
        else:
            _log(
                f"{name:<54} {row['ms_per_sample']:9.3f} ms/sample "
                f"{row.get('cpu_ms_per_sample', 0):9.3f} CPU "
                f"{row['synaptic_events_per_s'] / 1e6:8.1f} M events/s "
                f"{row['extra_peak_mb']:7.1f} MiB extra"
            )
    return measured


def _rows(measured, configs: list[Config], tree: str) -> list[dict]:
    rows = [combine(measured[(tree, cfg)]) for cfg in configs]
    rows.sort(key=_sort_key)
    add_ratios(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="asyncsnn (asynchronous and layered) against snnTorch on real events.",
    )
    ap.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    ap.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder holding nmnist-subset/ and dvs128-clips/",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for latest.json and latest.md"
    )
    ap.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS))
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="PATTERN",
        help="measure only the configurations whose name (network/mode/bBATCH/engine, e.g. "
        "'conv/inference/b32/*') matches a shell-style pattern or equals it",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measure every configuration this many times, the engines of a configuration "
        "one after another in each round, and report medians over rounds and each engine's "
        "ratio to snnTorch per round (default 3; 1 with --quick)",
    )
    ap.add_argument(
        "--against",
        metavar="REV",
        help="A/B mode: also measure a git revision (checked out into a temporary worktree) "
        "or another checkout's folder, interleaved with this tree, and report paired "
        "new/old ratios per round",
    )
    ap.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="backends of asyncsnn.run for asynchronous inference "
        "(default: numba and torch where both exist)",
    )
    ap.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cpu (default), or cuda: the GPU rows (the Triton kernel, the PyTorch engine, "
        "layered execution and snnTorch at batch 32, 256 and 1024; needs a CUDA GPU)",
    )
    args = ap.parse_args(argv)
    if args.device == "cuda":
        problem = gpu_problem()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 2
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1:
        ap.error(f"--rounds must be at least 1, got {rounds}")
    if not (args.data / "nmnist-subset").is_dir():
        ap.error(f"no N-MNIST samples at {args.data / 'nmnist-subset'}; give --data")
    if "dvs" in args.networks and not (args.data / "dvs128-clips").is_dir():
        ap.error(f"no DVS128 clips at {args.data / 'dvs128-clips'}; give --data or --networks")

    start = time.perf_counter()
    effort = EFFORT["quick" if args.quick else "full"]
    gpu = args.device == "cuda"
    backends = ["triton", "torch"] if gpu else (args.backends or available_backends())
    configs = (
        plan_gpu(args.quick, args.networks) if gpu else plan(args.quick, args.networks, backends)
    )
    configs = select(configs, args.only)
    if not configs:
        ap.error(f"--only {' '.join(args.only)} matches no configuration")
    meta = machine_info()
    new = Tree("new", REPO, describe(REPO))
    with contextlib.ExitStack() as stack:
        trees = [new]
        if args.against:
            try:
                trees.append(stack.enter_context(other_tree(args.against)))
            except (ValueError, RuntimeError) as e:
                ap.error(str(e))
        measured = measure_all(configs, rounds, trees, effort, args.data.resolve())
    rows = _rows(measured, configs, "new")
    meta.update(
        quick=args.quick,
        rounds=rounds,
        backends=backends,
        device=args.device,
        networks=args.networks,
        backends_asked=args.backends,
        only=args.only,
        against=args.against,
        trees={t.name: {"root": str(t.root), "rev": t.rev} for t in trees},
        wall_s=time.perf_counter() - start,
        threads=next((r["threads"] for r in rows if "threads" in r), None),
        load_average_end=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        effort=effort,
    )
    report = {
        "configs": rows,
        "targets": evaluate_gpu_targets(rows) if gpu else evaluate_targets(rows, backends[0]),
        "meta": meta,
    }
    stem = "latest-cuda" if gpu else "latest"
    if args.against:
        old_rows = {r["name"]: r for r in _rows(measured, configs, "old")}
        report["old_configs"] = list(old_rows.values())
        report["ab"] = [paired(r, old_rows[r["name"]]) for r in rows]
        stem += "-ab"
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (args.out / f"{stem}.json").write_text(text + "\n")
    table = markdown(report)
    if args.against:
        table = markdown_ab(report) + "\nThis tree's rows:\n\n" + table
    (args.out / f"{stem}.md").write_text(table)
    print(text if args.json else table, flush=True)
    failed = rows + report.get("old_configs", [])
    return 1 if any("error" in r for r in failed) else 0
