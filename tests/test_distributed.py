"""Data-parallel training under torchrun (asyncsnn.distributed): 2 CPU processes with gloo
give the weights of one process with the same global batch, and a distributed run killed
after an epoch resumes to the same result. The processes are started by torchrun itself
(``python -m torch.distributed.run --standalone``), as a user starts them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from asyncsnn import distributed
from asyncsnn.checkpoint import load_checkpoint
from asyncsnn.cli import main

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo process group", allow_module_level=True)


# unlayered training through the kernel, with input dropout (per-sample random streams), and
# a global batch of 13 that neither splits evenly nor divides the 54 training samples
def small(epochs: int = 3) -> list[str]:
    return [
        "--limit-train", "60", "--limit-test", "20", "--epochs", str(epochs), "--hidden", "12",
        "--timesteps", "6", "--batch-size", "13", "--input-dropout", "0.3", "-q",
    ]  # fmt: skip


SMALL = small()


def torchrun(out, *extra, wait=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "asyncsnn", "train", "--out", str(out), *extra]
    if not wait:
        return subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def weights(run):
    tensors, meta = load_checkpoint(run / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}, meta


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    r = CliRunner().invoke(main, ["train", "--out", str(out), *SMALL])
    assert r.exit_code == 0, r.output
    return out


def assert_same_training(run, reference):
    (mine, meta), (theirs, ref_meta) = weights(run), weights(reference)
    assert meta["epoch"] == ref_meta["epoch"] == 3
    assert sorted(mine) == sorted(theirs)
    for name in theirs:
        assert torch.allclose(mine[name], theirs[name], rtol=0, atol=1e-6), name
    lines, ref_lines = metrics(run), metrics(reference)
    assert len(lines) == len(ref_lines) == 3
    for a, b in zip(lines, ref_lines, strict=True):
        # counts reduced over the processes are exact; the loss is a float sum
        for key in ("train_accuracy", "train_spikes_per_sample", "val_accuracy"):
            assert a[key] == b[key], key
        assert a["val_spikes_per_sample"] == b["val_spikes_per_sample"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_two_processes_train_the_weights_of_one(single, tmp_path):
    out = tmp_path / "run"
    done = torchrun(out, *SMALL)
    assert_same_training(out, single)
    # only rank 0 wrote: one metrics line per epoch, one summary printed
    assert done.stdout.count('"epoch": 3') == 1, done.stdout
    # the weights moved: the comparison is not between two untrained networks
    fresh = tmp_path / "fresh"
    r = CliRunner().invoke(main, ["train", "--out", str(fresh), *small(epochs=1)])
    assert r.exit_code == 0, r.output
    assert any(
        not torch.allclose(weights(fresh)[0][k], weights(single)[0][k]) for k in weights(fresh)[0]
    )


def _stat(pid: int) -> tuple[int, str] | None:
    """``(parent pid, state)`` of a process from /proc, or ``None`` where it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (name) "
    return int(fields[1]), fields[0]


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, theirs, ...), found in /proc. torch elastic
    starts its workers in sessions of their own, so killing the launcher's group misses them."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents[int(entry)] = st[0]
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        children = [c for c, parent in parents.items() if parent == p]
        found += children
        frontier += children
    return found


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] not in ("Z", "X")  # a zombie has ended


def kill_all(job: subprocess.Popen, workers: list[int]) -> None:
    """SIGKILL the workers (each in its own session, with their groups) and the launcher's
    group, then wait until none of them runs."""
    ours = os.getpgrp()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            group = os.getpgid(pid)
            if group != ours:  # never the test's own group
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 30
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in workers), "a worker outlived SIGKILL"


def test_a_killed_distributed_run_resumes_to_the_same_result(single, tmp_path):
    out = tmp_path / "run"
    job = torchrun(out, *SMALL, wait=False)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        # the first epoch's last checkpoint written (its JSON copy is written after it)
        while not (out / "checkpoints" / "last.json").is_file():
            assert job.poll() is None, job.stdout.read().decode()
            assert time.monotonic() < deadline, "no epoch finished in time"
            workers = descendants(job.pid) or workers
            time.sleep(0.02)
        workers = descendants(job.pid) or workers
    finally:
        kill_all(job, workers or descendants(job.pid))
    assert len(workers) >= 2, workers  # the two trainers (and any helper of the launcher)
    # the kill landed mid-training: nothing writes any more, and the run has trained fewer
    # than its 3 epochs by its last checkpoint (a kill between an epoch's metrics line and its
    # checkpoint leaves one line more, which the resume trims)
    trained = len(metrics(out))
    time.sleep(1.0)
    assert len(metrics(out)) == trained
    _, meta = weights(out)
    assert 1 <= meta["epoch"] < meta["config"]["epochs"] == 3, meta["epoch"]
    assert trained in (meta["epoch"], meta["epoch"] + 1), (trained, meta["epoch"])
    done = torchrun(out, *SMALL, "--resume")
    assert "already finished" not in done.stderr  # the resume trained what was left
    assert [m["epoch"] for m in metrics(out)] == [1, 2, 3]
    assert_same_training(out, single)


def test_the_global_batch_is_shared_out_as_a_distributed_sampler_does():
    two = [distributed.World(rank=r, size=2) for r in (0, 1)]
    assert distributed.shard(5, two[0]).tolist() == [0, 2, 4]
    assert distributed.shard(5, two[1]).tolist() == [1, 3]
    assert distributed.shard(1, two[1]).tolist() == []
    assert distributed.shard(4, distributed.World()).tolist() == [0, 1, 2, 3]
    # weights of the processes' mean losses: their average is the global mean
    assert [distributed.loss_weight(n, 5, w) for n, w in zip((3, 2), two, strict=True)] == [
        6 / 5,
        4 / 5,
    ]
    sampler = torch.utils.data.DistributedSampler(range(6), num_replicas=2, rank=1, shuffle=False)
    assert list(sampler) == distributed.shard(6, two[1]).tolist()


def test_a_global_batch_smaller_than_the_processes_is_refused(monkeypatch, tmp_path):
    from asyncsnn.training import TrainConfig, Trainer

    monkeypatch.setattr(
        distributed, "setup", lambda device: (distributed.World(rank=0, size=4), device)
    )
    cfg = TrainConfig(batch_size=3, epochs=1, limit_train=40)
    with pytest.raises(ValueError, match="batch_size 3 is the global batch: it must be at least"):
        Trainer(cfg, tmp_path / "run", quiet=True).fit()


def test_devices_are_checked():
    from asyncsnn.training import TrainConfig, use_device

    assert TrainConfig(device="cuda:1").device == "cuda:1"  # readable on any machine
    for bad in ("gpu", "cpu:1", "mps", 3):
        with pytest.raises(ValueError, match="device must be"):
            TrainConfig(device=bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            use_device("cuda")
