"""Training that loses nothing: interrupted at every phase by Ctrl-C (SIGINT) or SIGKILL, a
resumed training ends bit-identical to an uninterrupted one; one writer per run directory;
what a resume may change."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from factories import tiny_split

import asyncsnn.training as training
from asyncsnn.checkpoint import load_checkpoint
from asyncsnn.rundir import RunDir, RunDirBusy
from asyncsnn.training import TrainConfig, Trainer

TESTS = Path(__file__).parent
FACTS = {
    "input_shape": [24],
    "timesteps": 8,
    "n_classes": 3,
    "dt": 1e-3,
    "classes": ["a", "b", "c"],
    "train_samples": 48,
    "val_samples": 12,
    "test_samples": 12,
}
SETTINGS = {
    "dataset": "synthetic",
    "dt": 1e-3,
    "hidden": (12,),
    "epochs": 2,
    "batch_size": 8,  # 6 batches per epoch
    "lr": 2e-2,
    "tau_m": 5e-3,
    "threshold": 0.3,
    "input_dropout": 0.2,
    "refractory_dropout": 0.3,
    "training": "unlayered",  # through the compiled kernel and its backward pass
}


def _splits():
    return tiny_split(48, 1), tiny_split(12, 2), tiny_split(12, 3), dict(FACTS)


def _final(run: Path) -> tuple[dict, str]:
    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert meta["epoch"] == SETTINGS["epochs"] and meta["batch"] == 0
    return tensors, (run / "metrics.jsonl").read_text()


def _assert_same(run: Path, reference: tuple[dict, str]) -> None:
    tensors, metrics = _final(run)
    ref_tensors, ref_metrics = reference
    assert sorted(tensors) == sorted(ref_tensors)
    for k, v in ref_tensors.items():
        assert torch.equal(tensors[k], v), k  # bit for bit: weights and optimizer state
    assert metrics == ref_metrics
    assert len(metrics.splitlines()) == SETTINGS["epochs"]
    assert not list(run.rglob("*.tmp"))  # no leftovers of interrupted writes


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact resume needs the same thread count
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("straight") / "run"
        Trainer(TrainConfig(**SETTINGS), run, quiet=True, splits=_splits()).fit()
        return _final(run)
    finally:
        torch.set_num_threads(before)


def _sigint_on_call(monkeypatch, owner, name, n, times=1, after=False):
    """Send SIGINT to this process (``times`` times) on the ``n``-th call of ``owner.name``,
    before the call or after it."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        hit = calls["n"] == n
        if hit and not after:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        out = real(*args, **kwargs)
        if hit and after:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def _validation_forward(monkeypatch, n, times=1):
    """SIGINT on the ``n``-th validation batch."""
    real = training.forward
    calls = {"n": 0}

    def wrapper(net, x, cfg, *, training, seed, **kw):
        if not training:
            calls["n"] += 1
            if calls["n"] == n:
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGINT)
        return real(net, x, cfg, training=training, seed=seed, **kw)

    monkeypatch.setattr(training, "forward", wrapper)
    return calls


SIGINT_PHASES = {
    # just after optimizer.step(): the update is applied, the batch must count as done
    "after the update": lambda mp: _sigint_on_call(mp, torch.optim.Adam, "step", 4, after=True),
    "during the update, twice": lambda mp: _sigint_on_call(
        mp, torch.optim.Adam, "step", 3, times=2
    ),
    # inside the forward pass (the kernel's run), once and twice (stop at once)
    "in the kernel": lambda mp: _sigint_on_call(mp, training, "run", 5),
    "in the kernel, twice": lambda mp: _sigint_on_call(mp, training, "run", 5, times=2),
    "checkpoint write": lambda mp: _sigint_on_call(mp, training, "save_checkpoint", 1),
    "metrics append": lambda mp: _sigint_on_call(mp, RunDir, "append_metrics", 1),
    "validation": lambda mp: _validation_forward(mp, 1),
    "validation, twice": lambda mp: _validation_forward(mp, 1, times=2),
}


@pytest.mark.parametrize("phase", sorted(SIGINT_PHASES))
def test_ctrl_c_at_every_phase_then_resume_is_bit_identical(
    tmp_path, reference, one_thread, phase, monkeypatch
):
    run = tmp_path / "run"
    cfg = TrainConfig(**SETTINGS)
    with monkeypatch.context() as mp:
        calls = SIGINT_PHASES[phase](mp)
        interrupted = False
        try:
            Trainer(cfg, run, quiet=True, splits=_splits()).fit()
        except KeyboardInterrupt:
            interrupted = True
    assert calls["n"] >= 1
    assert interrupted  # every phase here is before the end of the training
    _, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert (meta["epoch"], meta["batch"]) < (SETTINGS["epochs"], 0)
    if phase == "after the update":  # the 4th update applied: 4 batches done, not 3
        assert (meta["epoch"], meta["batch"]) == (0, 4)
    Trainer(cfg, run, quiet=True, splits=_splits()).fit(resume=True)
    _assert_same(run, reference)


KILL_SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from factories import tiny_split
import asyncsnn.training as training
import asyncsnn.checkpoint as checkpoint
from asyncsnn.rundir import RunDir

settings = {settings!r}
facts = {facts!r}
splits = tiny_split(48, 1), tiny_split(12, 2), tiny_split(12, 3), facts
phase, n, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
calls = [0]

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def on_call(owner, name, before=True, partial=None):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        calls[0] += 1
        hit = calls[0] == n
        if hit and before:
            if partial:
                partial(*a, **k)
            kill()
        out = real(*a, **k)
        if hit:
            kill()
        return out
    setattr(owner, name, wrapper)

def half_line(self, line):
    with open(self.metrics_path, "a") as f:
        f.write('{{"epoch": 2, "lr": 0.0')  # a line cut short, no newline
        f.flush()

if not resume:
    if phase == "step":
        on_call(torch.optim.Adam, "step", before=False)
    elif phase == "checkpoint":  # the temporary file written, not renamed
        on_call(checkpoint, "save_file", before=False)
    elif phase == "metrics":
        on_call(RunDir, "append_metrics", partial=half_line)
    elif phase == "validation":
        on_call(training.Trainer, "evaluate_split")
    elif phase == "kernel":
        on_call(training, "run")
cfg = training.TrainConfig(**settings)
training.Trainer(cfg, sys.argv[4], quiet=True, splits=splits).fit(resume=resume)
"""


@pytest.mark.parametrize(
    ("phase", "n"),
    [
        ("step", 8),
        ("checkpoint", 2),  # the first ``last``: a resume starts again
        ("checkpoint", 3),
        ("metrics", 2),
        ("validation", 2),
        ("kernel", 9),
    ],
)
def test_sigkill_at_every_phase_then_resume_is_bit_identical(tmp_path, reference, phase, n):
    script = tmp_path / "train.py"
    script.write_text(
        KILL_SCRIPT.format(tests=str(TESTS), settings=SETTINGS, facts=FACTS), encoding="utf-8"
    )
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, str(script), phase, str(n), "fresh", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if phase == "checkpoint":
        assert list(run.rglob("*.tmp"))  # what the kill left
    if phase == "metrics":
        assert not (run / "metrics.jsonl").read_text().endswith("\n")
    resumed = subprocess.run(
        [sys.executable, str(script), phase, str(n), "resume", str(run)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    _assert_same(run, reference)


# ------------------------------------------------------------------------------ one writer
def test_one_writer_per_run_directory(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(**{**SETTINGS, "epochs": 1})
    with RunDir(run).lock(), pytest.raises(RunDirBusy, match=f"process {os.getpid()}"):
        Trainer(cfg, run, quiet=True, splits=_splits()).fit()
    assert not (run / "config.json").exists()  # the refused training wrote nothing
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from asyncsnn.rundir import RunDir\n"
            f"with RunDir({str(run)!r}).lock():\n"
            "    print('held', flush=True); os.kill(os.getpid(), signal.SIGKILL)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.wait(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    line = Trainer(cfg, run, quiet=True, splits=_splits()).fit()  # a dead holder: not stuck
    assert line["epoch"] == 1


# ------------------------------------------------------------------------------ resume rules
@pytest.fixture()
def stopped(tmp_path, one_thread, monkeypatch):
    """A run stopped by Ctrl-C after the first epoch (in the second epoch's first batch)."""
    run = tmp_path / "run"
    with monkeypatch.context() as mp:
        _sigint_on_call(mp, torch.optim.Adam, "step", 7)
        with pytest.raises(KeyboardInterrupt):
            Trainer(TrainConfig(**SETTINGS), run, quiet=True, splits=_splits()).fit()
    return run


def test_a_resume_refuses_other_settings_and_fewer_epochs(stopped):
    splits = _splits()
    with pytest.raises(ValueError, match=r"differ from it: lr \(recorded 0.02, given 0.001\)"):
        Trainer(TrainConfig(**{**SETTINGS, "lr": 1e-3}), stopped, quiet=True, splits=splits).fit(
            resume=True
        )
    with pytest.raises(ValueError, match="has trained 2 epoch"):  # one and a part
        Trainer(TrainConfig(**{**SETTINGS, "epochs": 1}), stopped, quiet=True, splits=splits).fit(
            resume=True
        )


def test_more_epochs_on_resume_plan_the_cosine_schedule_again(stopped):
    cfg = TrainConfig(**{**SETTINGS, "epochs": 4})
    Trainer(cfg, stopped, quiet=True, splits=_splits()).fit(resume=True)
    lines = [json.loads(ln) for ln in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2, 3, 4]
    base = SETTINGS["lr"]
    # epoch 1 under the old plan (2 epochs), epochs 2-4 under the new one (4 epochs), the
    # learning rate falling throughout and never 0 before the end
    assert lines[0]["lr"] == pytest.approx(base)
    for e in (1, 2, 3):
        assert lines[e]["lr"] == pytest.approx(base * (1 + math.cos(math.pi * e / 4)) / 2)
    assert [ln["lr"] for ln in lines] == sorted((ln["lr"] for ln in lines), reverse=True)
    assert json.loads((stopped / "config.json").read_text())["config"]["epochs"] == 4


def test_a_resume_reads_the_configuration_from_the_checkpoint(stopped, tmp_path):
    (stopped / "config.json").unlink()
    cfg = TrainConfig.from_dict(training.recorded_config(stopped))
    assert cfg == TrainConfig(**SETTINGS)
    Trainer(cfg, stopped, quiet=True, splits=_splits()).fit(resume=True)
    assert json.loads((stopped / "config.json").read_text())["config"]["lr"] == SETTINGS["lr"]


def test_a_fresh_training_never_overwrites_a_run(stopped):
    for name in ("last", "best"):
        for suffix in (".safetensors", ".json"):
            (stopped / "checkpoints" / f"{name}{suffix}").unlink(missing_ok=True)
    metrics = (stopped / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(TrainConfig(**SETTINGS), stopped, quiet=True, splits=_splits()).fit()
    assert (stopped / "metrics.jsonl").read_text() == metrics


def test_a_partial_metrics_line_and_a_corrupt_one(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 1, "lr": 0.1})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "l')
    assert run.read_metrics() == [{"epoch": 1, "lr": 0.1}]
    run.trim_metrics(5)
    assert run.metrics_path.read_text() == '{"epoch": 1, "lr": 0.1}\n'
    run.metrics_path.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON line"):
        run.read_metrics()


def test_no_validation_samples_is_an_error(tmp_path):
    fit, _, test, facts = _splits()
    empty = training.Split(fit.x[:0], fit.y[:0])
    with pytest.raises(ValueError, match="no validation samples"):
        Trainer(
            TrainConfig(**SETTINGS), tmp_path / "r", quiet=True, splits=(fit, empty, test, facts)
        ).fit()


@pytest.mark.parametrize("delay", [0.05, 0.4, 0.9])
def test_ctrl_c_whenever_it_lands_then_resume_is_bit_identical(
    tmp_path, reference, one_thread, delay
):
    """Ctrl-C from another thread at an arbitrary moment (inside the compiled kernel, the
    backward pass, validation or a write): the training stops with its state saved, or
    finishes; either way a resume ends as the uninterrupted training."""
    import threading

    run = tmp_path / "run"
    cfg = TrainConfig(**SETTINGS)
    # a Ctrl-C that lands outside the training (before it starts, after it ends) is dropped
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        Trainer(cfg, run, quiet=True, splits=_splits()).fit()
    except KeyboardInterrupt:
        timer.join()
        Trainer(cfg, run, quiet=True, splits=_splits()).fit(resume=True)
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    _assert_same(run, reference)
