"""The spike log (docs/spike-log.md): exact round trips, NIR's reader, the forward step of each
spike on hand-computed networks, and a clear error for every file that is not a spike log."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import asyncsnn
from asyncsnn import Network, SpikeEvents, SpikeLogError, load_spikes, run, save_spikes
from asyncsnn.cli import main
from asyncsnn.result import RunResult, predict
from asyncsnn.spikelog import FORMAT_VERSION
from asyncsnn.training import load_run, load_test_split
from tests.factories import tiny_split

DT = 1e-3


def conv_net() -> Network:
    """24 inputs as (2, 3, 4) frames -> a (3, 3, 4) convolutional population -> 3 outputs."""
    torch.manual_seed(0)
    net = Network((2, 3, 4))
    net.add_population(
        "conv", [nn.Conv2d(2, 3, 3, padding=1, bias=False)], tau_m=20e-3, threshold=0.3
    )
    net.add_population(
        "out", [nn.Flatten(), nn.Linear(36, 3, bias=False)], source="conv", threshold=0.3
    )
    return net


def frames(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, samples, 2, 3, 4) input of tiny_split and its labels."""
    split = tiny_split(n, seed)
    return split.x.reshape(n, 8, 2, 3, 4).transpose(0, 1), split.y


def chain() -> Network:
    """input (2) -> a (2) -> b (2) -> c (2), identity weights, threshold 0.5, almost no leak:
    each spike makes the neuron of the same index in the next population fire."""
    net = Network((2,))
    for name, source in (("a", "input"), ("b", "a"), ("c", "b")):
        m = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            m.weight.copy_(torch.eye(2))
        net.add_population(name, [m], source=source, tau_m=1.0, threshold=0.5)
    return net


def twice() -> tuple[Network, torch.Tensor]:
    """input (2) -> a (2) -> b (1) with weights 1: with F=1 each of a's two spikes makes b
    fire (at forward steps 1 and 2) when refractory dropout leaves it able to fire again."""
    net = Network((2,))
    a = nn.Linear(2, 2, bias=False)
    b = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.eye(2))
        b.weight.fill_(1.0)
    net.add_population("a", [a], tau_m=1.0, threshold=0.5)
    net.add_population("b", [b], source="a", tau_m=1.0, threshold=0.5)
    return net, torch.ones(1, 1, 2)


def run_twice() -> RunResult:
    net, x = twice()
    return run(
        net,
        x,
        dt=DT,
        scheduler="fifo",
        group_size=1,
        hooks=[SpikeEvents()],
        refractory_dropout=0.999,
        refractory_dropout_at_eval=True,
    )


KEYS = ("sample", "timestep", "neuron", "forward_step")


def rows(ev: dict, keys=KEYS) -> list[tuple]:
    """Event records as a list of tuples of ``keys``."""
    return list(zip(*(ev[k].tolist() for k in keys), strict=True))


def events_of(ev: dict, start: int, size: int) -> list[tuple]:
    """The monitor's records of one population as (sample, timestep, neuron, step) in the
    spike log's order: by sample, timestep, forward step, neuron."""
    mine = [(s, t, j - start, k) for s, t, j, k in rows(ev) if start <= j < start + size]
    return sorted(mine, key=lambda e: (e[0], e[1], e[3], e[2]))


def logged_events(log_events: dict) -> list[tuple]:
    return rows(log_events)


@pytest.fixture(scope="module")
def runs():
    net = conv_net()
    x, y = frames()
    return {
        ex: run(
            net, x, dt=DT, execution=ex, scheduler="random", group_size=2, hooks=[SpikeEvents()]
        )
        for ex in ("layered", "async")
    }, y


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("execution", ["layered", "async"])
def test_round_trip_is_exact(runs, execution, tmp_path):
    results, y = runs
    r = results[execution]
    settings = {"execution": execution, "policy": "random", "F": 2, "seed": 0, "note": [1, "x"]}
    path = save_spikes(tmp_path / "log.h5", r, dt=DT, settings=settings, labels=y)
    log = load_spikes(path)
    assert r.spikes.sum() > 0 and r.forward_steps.sum() > 0  # something to compare
    for k in ("spikes", "forward_steps", "synops", "undelivered", "output_counts"):
        mine, theirs = getattr(log, k), getattr(r, k).detach()
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), k
    assert log.membrane is None and log.current is None
    assert torch.equal(log.labels, y)
    assert log.settings == settings and log.dt == DT and log.format_version == FORMAT_VERSION
    assert log.input_shape == (2, 3, 4) and log.n_input == 24
    assert [(p.name, p.shape, p.offset) for p in log.populations] == [
        ("conv", (3, 3, 4), 24),
        ("out", (3,), 60),
    ]
    for p in r.network.populations:
        assert torch.equal(log.population_spikes(p.name), r.population_spikes(p.name).detach())
        expected = events_of(r.records["spike_events"], p.offset - 24, p.size)
        assert logged_events(log.events[p.name]) == expected
    assert torch.equal(log.spike_count, r.spike_count.detach())


def test_nir_reads_the_file(runs, tmp_path):
    nir = pytest.importorskip("nir")
    r = runs[0]["async"]
    save_spikes(tmp_path / "log.h5", r, dt=DT)
    data = nir.read_data(str(tmp_path / "log.h5"))
    assert set(data.nodes) == {"conv", "out"}  # the asyncsnn group is not a node
    for p in r.network.populations:
        obs = data.nodes[p.name].observables
        spikes = obs["spikes"]
        assert isinstance(spikes, nir.TimeGriddedData) and spikes.dt == DT
        assert spikes.data.dtype == np.bool_ and spikes.shape == (6, 8, p.size)
        mine = r.population_spikes(p.name).detach().flatten(2).transpose(0, 1).bool().numpy()
        assert np.array_equal(spikes.data, mine)
        steps = obs["spike_steps"]
        assert isinstance(steps, nir.ValuedEventData)
        assert steps.n_neurons == p.size and steps.t_max == pytest.approx(8 * DT)
        valid = steps.idx >= 0
        assert valid.sum() == spikes.data.sum()
        assert (steps.value[valid] >= 0).all() and (steps.value[~valid] == -1).all()
        assert np.isinf(steps.time[~valid]).all()
        expected = events_of(r.records["spike_events"], p.offset - 24, p.size)
        in_file = [  # each sample's spikes by time, forward step and neuron
            (s, round(t / DT), int(j), int(k))
            for s in range(6)
            for j, t, k in zip(steps.idx[s], steps.time[s], steps.value[s], strict=True)
            if j >= 0
        ]
        assert in_file == expected


# ------------------------------------------------------------------------------ forward steps
# (timestep, neuron column, forward step) of every spike of chain() on input [1, 1] then [0, 1]
BY_HAND = {
    # F=1, FIFO: a0 and a1 fire at the input delivery (step 0); step 1 delivers a0 (b0 fires),
    # step 2 a1 (the older spike: b1 fires), step 3 b0 (c0), step 4 b1 (c1)
    ("async", 1): [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2), (0, 4, 3), (0, 5, 4)],
    # F=2: each step delivers a whole population
    ("async", 2): [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 1), (0, 4, 2), (0, 5, 2)],
    # layered: population at layer L at forward step L - 1
    ("layered", 1): [(0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 1), (0, 4, 2), (0, 5, 2)],
}
SECOND_TIMESTEP = [(1, 1, 0), (1, 3, 1), (1, 5, 2)]  # only the neurons of index 1 fire


@pytest.mark.parametrize(("execution", "F"), list(BY_HAND))
def test_the_forward_step_of_each_spike_by_hand(execution, F, tmp_path):
    x = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    r = run(
        chain(), x, dt=DT, execution=execution, scheduler="fifo", group_size=F,
        hooks=[SpikeEvents()],
    )  # fmt: skip
    ev = r.records["spike_events"]
    got = rows(ev, ("timestep", "neuron", "forward_step"))
    assert got == BY_HAND[execution, F] + SECOND_TIMESTEP
    assert ev["sample"].tolist() == [0] * 9
    expected_steps = [4, 2] if (execution, F) == ("async", 1) else [2, 2]  # layered: 2 layers
    assert r.forward_steps.flatten().tolist() == expected_steps
    log = load_spikes(save_spikes(tmp_path / "chain.h5", r, dt=DT))
    for i, name in enumerate("abc"):
        mine = [(t, 2 * i + j, k) for _, t, j, k in logged_events(log.events[name])]
        assert mine == sorted(e for e in got if 2 * i <= e[1] < 2 * i + 2)


def test_layered_steps_are_those_of_the_layered_policy():
    """Feed-forward, no biases, F at least the widest layer: the layered policy fires every
    spike at the forward step layered execution records for it."""
    torch.manual_seed(3)
    net = Network.sequential(
        [nn.Linear(24, 16, bias=False), nn.Linear(16, 8, bias=False), nn.Linear(8, 3, bias=False)],
        tau_m=20e-3,
        threshold=0.4,
    )
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, 0.0, 0.5)
    x = tiny_split(4, 1).x.transpose(0, 1)
    runs = [
        run(net, x, dt=DT, execution=ex, scheduler="layered", group_size=64, hooks=[SpikeEvents()])
        for ex in ("layered", "async")
    ]
    layered, asynchronous = (r.records["spike_events"] for r in runs)
    assert torch.equal(runs[0].spikes, runs[1].spikes)
    assert set(layered["forward_step"].tolist()) == {0, 1, 2}  # all three populations fired
    assert events_of(layered, 0, 27) == events_of(asynchronous, 0, 27)


def test_counts_above_one_are_unsigned_integers(tmp_path):
    nir = pytest.importorskip("nir")
    r = run_twice()
    assert r.spikes.detach().flatten().tolist() == [1.0, 1.0, 2.0]  # b fired twice
    save_spikes(tmp_path / "twice.h5", r, dt=DT)
    data = nir.read_data(str(tmp_path / "twice.h5"))
    a, b = (data.nodes[n].observables["spikes"].data for n in "ab")
    assert a.dtype == np.bool_ and a.tolist() == [[[True, True]]]
    assert b.dtype == np.uint8 and b.tolist() == [[[2]]]
    steps = data.nodes["b"].observables["spike_steps"]
    assert steps.idx.tolist() == [[0, 0]] and steps.value.tolist() == [[1, 2]]
    log = load_spikes(tmp_path / "twice.h5")
    assert torch.equal(log.spikes, r.spikes.detach())
    assert log.events["b"]["forward_step"].tolist() == [1, 2]


def test_batches_join_in_order_and_max_samples_cuts(tmp_path):
    net = conv_net()
    x, y = frames(7, seed=2)
    parts = [
        run(net, x[:, i : i + 4], dt=DT, seed=i, group_size=2, hooks=[SpikeEvents()])
        for i in (0, 4)
    ]
    log = load_spikes(save_spikes(tmp_path / "b.h5", parts, dt=DT, labels=y[:5], max_samples=5))
    assert log.n_samples == 5 and log.n_timesteps == 8
    joined = torch.cat([parts[0].spikes, parts[1].spikes[:, :1]], 1).detach()
    assert torch.equal(log.spikes, joined)
    steps = torch.cat([parts[0].forward_steps, parts[1].forward_steps[:, :1]], 1)
    assert torch.equal(log.forward_steps, steps)
    assert torch.equal(log.labels, y[:5])
    second = events_of(parts[1].records["spike_events"], 0, 36)
    conv = logged_events(log.events["conv"])
    assert [e for e in conv if e[0] == 4] == [(4, *e[1:]) for e in second if e[0] == 0]
    assert len(conv) == int(joined[..., :36].sum())


def test_a_membrane_readout_keeps_its_membrane_and_current(tmp_path):
    torch.manual_seed(1)
    net = Network.sequential(
        [nn.Linear(24, 6, bias=False), nn.Linear(6, 3, bias=False)],
        readout="membrane",
        tau_syn=5e-3,
        threshold=0.3,
    )
    r = run(net, tiny_split(3, 0).x.transpose(0, 1), dt=DT, group_size=2)
    assert r.membrane is not None and r.current is not None
    log = load_spikes(save_spikes(tmp_path / "m.h5", r, dt=DT))
    assert torch.equal(log.membrane, r.membrane.detach())
    assert torch.equal(log.current, r.current.detach())
    assert [p.spiking for p in log.populations] == [True, False]
    assert log.events is None  # no monitor ran
    with h5py.File(tmp_path / "m.h5") as f:
        assert f["asyncsnn/membrane"].shape == (3, 8, 3)


# ------------------------------------------------------------------------------ writing
def test_the_file_on_disk_is_always_complete(runs, tmp_path, monkeypatch):
    r = runs[0]["async"]
    path = tmp_path / "log.h5"
    save_spikes(path, r, dt=DT, settings={"first": 1})
    import asyncsnn.spikelog as spikelog

    def crash(f, *args):
        f.create_group("nodes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(spikelog, "_write", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_spikes(path, r, dt=DT, settings={"second": 2})
    assert load_spikes(path).settings == {"first": 1}  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["log.h5"]  # no temporary file left


def test_bad_arguments_to_save_spikes(runs, tmp_path):
    results, y = runs
    r = results["async"]
    out = tmp_path / "x.h5"
    other = run(chain(), torch.ones(8, 1, 2), dt=DT)
    short = run(conv_net(), frames()[0][:3], dt=DT)
    cases = [
        (dict(result=[]), "at least one RunResult"),
        (dict(dt=0.0), "dt must be a positive number"),
        (dict(dt=float("inf")), "dt must be a positive number"),
        (dict(settings={"x": float("nan")}), "settings must be JSON values"),
        (dict(settings={"x": object()}), "settings must be JSON values"),
        (dict(settings=[1]), "settings must be a dict"),
        (dict(labels=y[:2]), r"labels must be 6 integers .* shape \(2,\)"),
        (dict(labels=y.float()), "labels must be 6 integers"),
        (dict(result=[r, other]), "runs of different networks"),
        (dict(result=[r, short]), r"different numbers of timesteps: \[3, 8\]"),
        (dict(result=short, events=True), "not every run recorded its spikes' forward steps"),
        (dict(max_samples=0), "max_samples must be an int >= 1"),
    ]
    for change, message in cases:
        kwargs = {"result": r, "dt": DT, **change}
        with pytest.raises(ValueError, match=message):
            save_spikes(out, **kwargs)
    assert not out.exists()


def test_save_refuses_what_is_not_a_spike_count_or_not_its_events(runs, tmp_path):
    r = runs[0]["async"]
    half = RunResult(
        r.spikes.detach() * 0.5, r.forward_steps, r.output_counts, None, r.synops,
        r.undelivered, r.network,
    )  # fmt: skip
    with pytest.raises(ValueError, match="not counts"):
        save_spikes(tmp_path / "x.h5", half, dt=DT)
    ev = {k: v.clone() for k, v in r.records["spike_events"].items()}
    ev["neuron"][0] = (ev["neuron"][0] + 1) % 39
    moved = RunResult(**{**vars(r), "records": {"spike_events": ev}})
    with pytest.raises(ValueError, match="do not count the result's spikes"):
        save_spikes(tmp_path / "x.h5", moved, dt=DT)
    net = Network((2,))
    net.add_population("a/b", [nn.Linear(2, 1, bias=False)])
    slash = run(net, torch.ones(1, 1, 2), dt=DT)
    with pytest.raises(ValueError, match="'a/b' cannot name an HDF5 group"):
        save_spikes(tmp_path / "x.h5", slash, dt=DT)
    assert not (tmp_path / "x.h5").exists()


# ------------------------------------------------------------------------------ reading
@pytest.fixture
def good(runs, tmp_path):
    path = tmp_path / "good.h5"
    save_spikes(path, runs[0]["async"], dt=DT, settings={"seed": 0}, labels=runs[1])
    return path


def edited(path, edit):
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def replace(name, data):
    def edit(f):
        del f[name]
        f[name] = data

    return edit


def test_a_missing_file_a_folder_and_a_file_that_is_not_hdf5(tmp_path):
    with pytest.raises(FileNotFoundError, match="no spike-log file at .*nothing.h5"):
        load_spikes(tmp_path / "nothing.h5")
    with pytest.raises(SpikeLogError, match="is a folder, not a file"):
        load_spikes(tmp_path)
    (tmp_path / "text.h5").write_text("time,neuron\n0,1\n")
    with pytest.raises(SpikeLogError, match=r"text\.h5: not an HDF5 file"):
        load_spikes(tmp_path / "text.h5")


def test_a_truncated_file(good):
    data = good.read_bytes()
    for keep in (len(data) // 2, 600):
        cut = good.with_name(f"cut{keep}.h5")
        cut.write_bytes(data[:keep])
        with pytest.raises(SpikeLogError, match=f"cut{keep}.h5: truncated or corrupt"):
            load_spikes(cut)


def test_an_hdf5_file_of_another_program(tmp_path):
    nir = pytest.importorskip("nir")
    path = tmp_path / "nir.h5"
    grid = nir.TimeGriddedData(np.zeros((1, 2, 3), dtype=bool), DT)
    nir.write_data(path, nir.NIRGraphData({"a": nir.NIRNodeData({"spikes": grid})}))
    with pytest.raises(SpikeLogError, match="has no 'asyncsnn' group"):
        load_spikes(path)


def test_an_unknown_format_version(good):
    edited(good, lambda f: f["asyncsnn"].attrs.modify("format_version", FORMAT_VERSION + 1))
    with pytest.raises(SpikeLogError, match=r"format_version 2 is not one this asyncsnn reads"):
        load_spikes(good)


BROKEN = {
    "forward steps of the wrong shape": (
        replace("asyncsnn/forward_steps", np.zeros((6, 7), dtype=np.int64)),
        r"/asyncsnn/forward_steps has shape \(6, 7\), expected \(6, 8\)",
    ),
    "spikes of the wrong shape": (
        replace("nodes/out/observables/spikes/data", np.zeros((6, 8, 4), dtype=bool)),
        r"/nodes/out/observables/spikes/data has shape \(6, 8, 4\), expected \(6, 8, 3\)",
    ),
    "text where numbers belong": (
        replace("asyncsnn/synops", np.array([b"x"] * 6)),
        r"asyncsnn/synops is of dtype \|S1, not of the expected kind",
    ),
    "float spikes": (
        replace("nodes/out/observables/spikes/data", np.zeros((6, 8, 3))),
        "spikes/data is of dtype float64",
    ),
    "a missing population node": (
        lambda f: f["nodes"].move("conv", "renamed"),
        "the population 'conv' has no node nodes/conv/observables",
    ),
    "offsets that do not follow the input": (
        replace("asyncsnn/populations/offset", np.array([24, 59])),
        "the population 'out' starts at neuron 59, expected 60",
    ),
    "settings that are not JSON": (
        lambda f: f["asyncsnn"].attrs.modify("settings", "{seed: 0"),
        "the settings are not JSON",
    ),
    "events that do not count the spikes": (
        lambda f: f["nodes/conv/observables/spike_steps/idx"].write_direct(
            np.full(f["nodes/conv/observables/spike_steps/idx"].shape, -1)
        ),
        "spike_steps does not count the population's spikes",
    ),
    "events of one population only": (
        lambda f: f.__delitem__("nodes/conv/observables/spike_steps"),
        "some populations have spike_steps and others not",
    ),
    "no dt": (lambda f: f["asyncsnn"].attrs.__delitem__("dt"), "asyncsnn.dt is missing"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_inconsistent_files_name_the_problem(good, case):
    edit, message = BROKEN[case]
    edited(good, edit)
    with pytest.raises(SpikeLogError, match=message) as info:
        load_spikes(good)
    assert str(good) in str(info.value) and isinstance(info.value, ValueError)


def test_the_file_is_read_as_data_only(good):
    """The settings are JSON text; a file whose settings try to be anything else is refused."""
    code = "__import__('os').system('echo hacked')"
    edited(good, lambda f: f["asyncsnn"].attrs.modify("settings", code))
    with pytest.raises(SpikeLogError, match="the settings are not JSON"):
        load_spikes(good)
    edited(good, lambda f: f["asyncsnn"].attrs.modify("settings", json.dumps([code])))
    with pytest.raises(SpikeLogError, match="the settings are not a JSON object"):
        load_spikes(good)


# ------------------------------------------------------------------------------ the CLI
def test_evaluate_writes_the_spike_log(tmp_path):
    """On a run made by ``asyncsnn import`` (no training: quick) of a small network."""
    nir = pytest.importorskip("nir")
    torch.manual_seed(0)
    net = Network.sequential(
        [nn.Flatten(), nn.Linear(512, 8, bias=False), nn.Linear(8, 10, bias=False)],
        input_shape=(2, 16, 16),
        tau_m=20e-3,
    )
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, 0.0, 0.2)
    nir.write(tmp_path / "m.nir", asyncsnn.to_nir(net, dt=0.01))
    run_dir = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["import", str(tmp_path / "m.nir"), "--dt", "0.01", "--dataset", "digits"]
        + ["--timesteps", "5", "--out", str(run_dir)],
    )
    assert r.exit_code == 0, r.output
    evaluate = ["evaluate", str(run_dir), "--scheduler", "fifo", "-F", "4", "--limit-test", "8"]
    evaluate.append("--json")
    r = CliRunner().invoke(main, [*evaluate, "--spikes-out", str(tmp_path / "all.h5")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["spikes_out"] == str(tmp_path / "all.h5")
    log = load_spikes(tmp_path / "all.h5")  # all 8 samples: fewer than --spikes-samples
    assert log.n_samples == 8 and log.n_timesteps == 5 and log.dt == 0.01
    assert [(p.name, p.shape) for p in log.populations] == [("hidden1", (8,)), ("output", (10,))]
    assert log.settings["execution"] == "async" and log.settings["policy"] == "fifo"
    assert log.settings["F"] == 4 and log.settings["seed"] == 0
    assert log.settings["batch_size"] == 128 and log.settings["dataset"] == "digits"
    # the log is the run the metrics came from
    assert log.spike_count.float().mean().item() == pytest.approx(out["spikes_per_sample"])
    assert log.synops.sum(0).mean().item() == pytest.approx(out["synops_per_sample"])
    steps = log.forward_steps.double().mean().item()
    assert steps == pytest.approx(out["forward_steps_per_timestep"])
    assert torch.equal(log.prediction, predict(log.output_counts))
    accuracy = (log.prediction == log.labels).double().mean().item()
    assert accuracy == pytest.approx(out["accuracy"])
    assert log.spikes.sum() > 0
    assert sum(len(e["sample"]) for e in log.events.values()) == log.spikes.sum()
    _, cfg, _ = load_run(run_dir)
    test = load_test_split(dataclasses.replace(cfg, limit_test=8))
    assert torch.equal(log.labels, test.y)  # the test split, in evaluation order
    r = CliRunner().invoke(
        main, [*evaluate[:-1], "--spikes-out", str(tmp_path / "3.h5"), "--spikes-samples", "3"]
    )
    assert r.exit_code == 0, r.output
    assert f"spike log of 3 samples: {tmp_path / '3.h5'}" in r.output
    first = load_spikes(tmp_path / "3.h5")
    assert first.n_samples == 3
    assert torch.equal(first.spikes, log.spikes[:, :3])
    assert torch.equal(first.labels, log.labels[:3])
    r = CliRunner().invoke(main, [*evaluate[:-1], "--spikes-out", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.output


def test_the_public_names():
    for name in ("save_spikes", "load_spikes", "SpikeLog", "SpikeLogError", "SpikeEvents"):
        assert name in asyncsnn.__all__ and hasattr(asyncsnn, name), name
