"""Spike-log files that cannot be right are refused before they are read, and --spikes-out
never overwrites a file that is not a spike log (nor one that is, without --force)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from asyncsnn import Network, SpikeLogError, load_spikes, run, save_spikes
from asyncsnn.cli import main
from asyncsnn.spikelog import MAX_EXPANSION, is_spike_log

DT = 1e-3


def small_log(path):
    net = Network((3,))
    net.add_population("a", [nn.Linear(3, 4, bias=False)], tau_m=1.0, threshold=0.2)
    x = (torch.rand(5, 2, 3, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with torch.no_grad():
        save_spikes(path, [run(net, x, dt=DT, execution="layered")], dt=DT)
    return path


def crafted(path, samples: int, written: bool = False):
    """The log with ``samples`` declared and a spike dataset of that many samples, chunked
    and compressed, with nothing (or one chunk) stored."""
    with h5py.File(path, "r+") as f:
        T, n = f["asyncsnn"].attrs["timesteps"], 4
        f["asyncsnn"].attrs["samples"] = samples
        obs = f["nodes/a/observables/spikes"]
        del obs["data"]
        d = obs.create_dataset(
            "data", shape=(samples, T, n), dtype=np.uint8, chunks=(1, T, n), compression="gzip"
        )
        if written:
            d[0] = 1
    return path


def test_a_dataset_declaring_far_more_than_the_file_stores_is_refused_unread(tmp_path):
    path = crafted(small_log(tmp_path / "huge.h5"), samples=2**36)  # 1.25 TiB of counts
    size = path.stat().st_size
    assert size < 64 * 1024
    with pytest.raises(SpikeLogError) as err:
        load_spikes(path)
    message = str(err.value)
    assert message.startswith(f"spike log {path}: /nodes/a/observables/spikes/data declares")
    assert "of shape (68719476736, 5, 4) but the file stores 0 bytes" in message
    assert "truncated or crafted, not read" in message
    crafted(path, samples=2**36, written=True)  # one chunk stored does not make it right
    with pytest.raises(SpikeLogError, match="truncated or crafted"):
        load_spikes(path)


def test_the_bound_is_deflates_and_an_honest_log_passes_it(tmp_path):
    path = small_log(tmp_path / "ok.h5")
    log = load_spikes(path)
    assert log.n_samples == 2 and log.n_timesteps == 5
    # a real, highly compressible log stays inside the bound: zeros at deflate's best ratio
    zeros = tmp_path / "zeros.h5"
    with h5py.File(zeros, "w") as f:
        d = f.create_dataset("z", data=np.zeros((64, 1000, 100), np.uint8), compression="gzip")
        assert d.size <= MAX_EXPANSION * d.id.get_storage_size()
    # a shape that disagrees with the file's other fields is refused before reading
    bad = crafted(small_log(tmp_path / "shape.h5"), samples=2, written=True)
    with h5py.File(bad, "r+") as f:
        f["asyncsnn"].attrs["samples"] = 3
    with pytest.raises(SpikeLogError, match=r"spikes/data has shape \(2, 5, 4\), expected"):
        load_spikes(bad)


# ------------------------------------------------------------------------------ --spikes-out
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("spikes-out") / "run"
    args = ["--epochs", "1", "--limit-train", "40", "--limit-test", "10", "--timesteps", "5"]
    r = CliRunner().invoke(main, ["train", "--out", str(out), *args, "-q"])
    assert r.exit_code == 0, r.output
    return out


def evaluate(run, target, *more):
    args = ["evaluate", str(run), "--limit-test", "4", "--json", "--spikes-out", str(target)]
    return CliRunner().invoke(main, [*args, *more])


def test_spikes_out_never_overwrites_a_file_that_is_not_a_spike_log(trained):
    best = trained / "checkpoints" / "best.safetensors"
    before = best.read_bytes()
    for force in ([], ["--force"]):
        r = evaluate(trained, best, *force)
        assert r.exit_code == 1, r.output
        assert r.stderr.splitlines() == [
            f"Error: {best}: exists and is not a spike log: it is never overwritten; choose "
            "another path"
        ]
        assert r.stdout == ""  # refused before the evaluation
    assert best.read_bytes() == before
    r = CliRunner().invoke(main, ["evaluate", str(trained), "--limit-test", "4", "--json"])
    assert r.exit_code == 0, r.output  # the run is whole


def test_spikes_out_overwrites_a_spike_log_only_with_force(trained, tmp_path):
    target = tmp_path / "log.h5"
    r = evaluate(trained, target)
    assert r.exit_code == 0, r.output and is_spike_log(target)
    first = target.read_bytes()
    r = evaluate(trained, target, "--spikes-samples", "2")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"Error: {target}: already holds a spike log; --force overwrites it"
    ]
    assert target.read_bytes() == first
    r = evaluate(trained, target, "--spikes-samples", "2", "--force")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["spikes_out"] == str(target)
    assert load_spikes(target).n_samples == 2
