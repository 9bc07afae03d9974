"""Fine-tuning (``TrainConfig.init``, ``asyncsnn train --init``): from a run directory's
checkpoint or from a NIR file (the project's own export, snnTorch's), its errors, its resume
and the command line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from factories import tiny_split

import asyncsnn.training as training
from asyncsnn.checkpoint import CheckpointError, load_checkpoint
from asyncsnn.cli import main
from asyncsnn.evaluation import Execution, evaluate
from asyncsnn.network import Network
from asyncsnn.training import TrainConfig, Trainer, load_run

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
    "training": "unlayered",
}


def _splits(facts=FACTS):
    return tiny_split(48, 1), tiny_split(12, 2), tiny_split(12, 3), dict(facts)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**SETTINGS, **kw})


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-exact comparisons need the same thread count
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trained run (2 epochs, lr 2e-2) to fine-tune from."""
    run = tmp_path_factory.mktemp("source") / "run"
    Trainer(_cfg(), run, quiet=True, splits=_splits()).fit()
    return run


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    """The source run's best model as a NIR file, by the project's own export."""
    nir = pytest.importorskip("nir")
    from asyncsnn.interchange import to_nir

    net, cfg, _ = load_run(source, "best")
    path = tmp_path_factory.mktemp("nir") / "source.nir"
    nir.write(str(path), to_nir(net, dt=cfg.dt))
    return path


def _capture_start(monkeypatch) -> dict:
    """The network's state (a copy) as the first training batch meets it."""
    seen: dict = {}
    real = training.forward

    def spy(net, x, cfg, *, training, seed, **kw):
        if training and not seen:
            seen.update({k: v.detach().clone() for k, v in net.state_dict().items()})
        return real(net, x, cfg, training=training, seed=seed, **kw)

    monkeypatch.setattr(training, "forward", spy)
    return seen


def _model(path) -> dict:
    tensors, _ = load_checkpoint(path)
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def _weights(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("tau_m", "threshold")}


# ------------------------------------------------------------------------------ from a run
@pytest.mark.parametrize("which", ["best", "last"])
def test_fine_tuning_from_a_run_starts_at_its_weights(tmp_path, source, monkeypatch, which):
    start = _capture_start(monkeypatch)
    init = str(source) if which == "best" else f"{source}:last"
    cfg = _cfg(init=init, epochs=1, lr=1e-3, lr_schedule="constant")
    Trainer(cfg, tmp_path / "ft", quiet=True, splits=_splits()).fit()
    expected = _model(source / "checkpoints" / f"{which}.safetensors")
    assert sorted(start) == sorted(expected)
    for k, v in _weights(expected).items():
        assert torch.equal(start[k], v), k
    assert torch.equal(start["tau_m"], torch.full((15,), 5e-3))  # the configuration's
    assert torch.equal(start["threshold"], torch.full((15,), 0.3))
    # the training moved away from it, with a fresh optimizer and epochs from 0
    after = _model(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    assert not torch.equal(
        after["projections.0.chain.0.weight"], start["projections.0.chain.0.weight"]
    )
    tensors, meta = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    assert float(tensors["optim.0.step"]) == 6  # one epoch of 6 batches, nothing of the source's
    assert meta["epoch"] == 1 and meta["config"]["init"] == init
    lines = [json.loads(ln) for ln in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [(ln["epoch"], ln["lr"]) for ln in lines] == [(1, 1e-3)]
    record = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert record["config"]["init"] == init
    assert record["config"]["init_discretization"] == "exact"
    assert not (tmp_path / "ft" / "init.nir").exists()


def test_other_neurons_than_the_runs_are_the_configurations_with_a_warning(
    tmp_path, source, monkeypatch
):
    start = _capture_start(monkeypatch)
    cfg = _cfg(init=str(source), epochs=1, threshold=0.5)
    with pytest.warns(UserWarning, match="other tau_m, threshold or tau_syn"):
        Trainer(cfg, tmp_path / "ft", quiet=True, splits=_splits()).fit()
    assert torch.equal(start["threshold"], torch.full((15,), 0.5))
    expected = _model(source / "checkpoints" / "best.safetensors")
    for k, v in _weights(expected).items():
        assert torch.equal(start[k], v), k
    net, cfg2, _ = load_run(tmp_path / "ft")  # rebuilt from the configuration, as trained
    assert cfg2.threshold == 0.5 and torch.equal(net.threshold, torch.full((15,), 0.5))


# ------------------------------------------------------------------------------ from NIR
def test_fine_tuning_from_an_exported_nir_file(tmp_path, source, exported, monkeypatch, one_thread):
    import nir

    nir_copy = tmp_path / "model.nir"
    shutil.copyfile(exported, nir_copy)
    cfg = _cfg(init=str(nir_copy), epochs=1, hidden=(99,), tau_m=1.0, threshold=9.0)
    with monkeypatch.context() as mp:
        start = _capture_start(mp)
        line = Trainer(cfg, tmp_path / "ft", quiet=True, splits=_splits()).fit()
    graph = nir.read(str(exported))
    # the network is the graph's: its weights, time constants and thresholds, whatever the
    # configuration's hidden, tau_m and threshold
    assert torch.equal(
        start["projections.0.chain.0.weight"],
        torch.as_tensor(graph.nodes["input_to_hidden1"].weight),
    )
    assert torch.equal(
        start["projections.0.chain.0.bias"], torch.as_tensor(graph.nodes["input_to_hidden1"].bias)
    )
    assert torch.equal(
        start["projections.1.chain.0.weight"],
        torch.as_tensor(graph.nodes["hidden1_to_output"].weight),
    )
    taus = [torch.as_tensor(graph.nodes[n].tau).flatten() for n in ("hidden1", "output")]
    thetas = [torch.as_tensor(graph.nodes[n].v_threshold).flatten() for n in ("hidden1", "output")]
    assert torch.equal(start["tau_m"], torch.cat(taus))
    assert torch.equal(start["threshold"], torch.cat(thetas))
    expected = _model(source / "checkpoints" / "best.safetensors")  # the exported run's
    assert sorted(start) == sorted(expected)
    for k, v in expected.items():
        assert torch.equal(start[k], v), k
    assert (tmp_path / "ft" / "init.nir").read_bytes() == exported.read_bytes()

    # reloaded from the run directory alone: the init file may go
    nir_copy.unlink()
    net, cfg2, _ = load_run(tmp_path / "ft", "last")
    assert cfg2.init == str(nir_copy)
    trained = _model(tmp_path / "ft" / "checkpoints" / "last.safetensors")
    for k, v in net.state_dict().items():
        assert torch.equal(v, trained[k]), k
    result = evaluate(net, _splits()[2], cfg2, Execution.parse("async-momentum"))
    assert 0 <= result["summary"]["accuracy"] <= 1

    # the same start as from the run itself: the same training, bit for bit
    same = Trainer(
        _cfg(init=str(source), epochs=1), tmp_path / "from-run", quiet=True, splits=_splits()
    ).fit()
    assert same == line


def test_fine_tuning_a_snntorch_model(tmp_path, monkeypatch):
    nir = pytest.importorskip("nir")
    snn = pytest.importorskip("snntorch")
    from snntorch.export_nir import export_to_nir
    from torch import nn

    from asyncsnn.interchange import SNNTORCH_DT

    torch.manual_seed(3)

    def leaky(n, **kw):
        return snn.Leaky(
            beta=torch.full((n,), 0.95),
            threshold=torch.full((n,), 0.5),
            reset_mechanism="zero",
            init_hidden=True,
            **kw,
        )

    model = nn.Sequential(nn.Linear(24, 16), leaky(16), nn.Linear(16, 3), leaky(3, output=True))
    path = tmp_path / "snntorch.nir"
    with torch.no_grad():
        nir.write(str(path), export_to_nir(model, torch.zeros(1, 24), ignore_dims=[0]))

    start = _capture_start(monkeypatch)
    facts = {**FACTS, "dt": SNNTORCH_DT}
    cfg = _cfg(init=str(path), init_discretization="euler", dt=SNNTORCH_DT, epochs=1)
    line = Trainer(cfg, tmp_path / "ft", quiet=True, splits=_splits(facts)).fit()
    assert line["epoch"] == 1
    # snnTorch writes r = tau/dt: the gain is 1 and the weights are snnTorch's
    assert torch.equal(start["projections.0.chain.0.weight"], model[0].weight.detach())
    assert torch.equal(start["projections.1.chain.0.bias"], model[2].bias.detach())
    beta = torch.exp(-SNNTORCH_DT / start["tau_m"])
    assert torch.allclose(beta, torch.full((19,), 0.95), atol=1e-5)
    assert torch.equal(start["threshold"], torch.full((19,), 0.5))

    net, cfg2, _ = load_run(tmp_path / "ft")
    trained = _model(tmp_path / "ft" / "checkpoints" / "best.safetensors")
    assert not torch.equal(
        trained["projections.0.chain.0.weight"], start["projections.0.chain.0.weight"]
    )
    for k, v in net.state_dict().items():
        assert torch.equal(v, trained[k]), k
    assert cfg2.dt == SNNTORCH_DT and cfg2.init_discretization == "euler"
    result = evaluate(net, _splits(facts)[2], cfg2, Execution.parse("async-momentum"))
    assert 0 <= result["summary"]["accuracy"] <= 1 and result["summary"]["spike_density"] > 0


# ------------------------------------------------------------------------------ errors
def _refused(tmp_path, cfg, error, *needles, facts=FACTS):
    out = tmp_path / "refused"
    with pytest.raises(error) as info:
        Trainer(cfg, out, quiet=True, splits=_splits(facts)).fit()
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    assert not (out / "config.json").exists() and not (out / "init.nir").exists()
    return str(info.value)


def test_errors_name_the_problem(tmp_path, source, exported):
    pytest.importorskip("nir")
    import nir

    from asyncsnn.interchange import to_nir

    missing = str(tmp_path / "nowhere")
    _refused(tmp_path, _cfg(init=missing), FileNotFoundError, "no run directory at", missing)
    _refused(tmp_path, _cfg(init=missing + ".nir"), FileNotFoundError, "no NIR file at")
    (tmp_path / "empty").mkdir()
    _refused(
        tmp_path,
        _cfg(init=str(tmp_path / "empty")),
        CheckpointError,
        "no checkpoint",
        "not a run directory",
    )
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copyfile(source / "config.json", unfinished / "config.json")
    _refused(
        tmp_path,
        _cfg(init=f"{unfinished}:last"),
        CheckpointError,
        "last.safetensors",
        "not finished an epoch",
    )
    (tmp_path / "garbage.nir").write_text("not HDF5")
    _refused(
        tmp_path,
        _cfg(init=str(tmp_path / "garbage.nir")),
        ValueError,
        "cannot be read as a NIR graph",
    )
    _refused(tmp_path, _cfg(init=str(exported.parent)), CheckpointError, "no checkpoint")
    with pytest.raises(ValueError, match="picks a run directory's checkpoint"):
        _cfg(init=f"{exported}:last")
    with pytest.raises(ValueError, match="init_discretization must be one of"):
        _cfg(init_discretization="zoh")
    with pytest.raises(ValueError, match="init must name"):
        _cfg(init="")

    # a run of another architecture, or data of another shape: which shapes differ
    message = _refused(
        tmp_path, _cfg(init=str(source), hidden=(7,)), CheckpointError, "shapes differ"
    )
    assert (
        "projections.0.chain.0.weight (12, 24) in the checkpoint, (7, 24) in the network" in message
    )
    assert "hidden [12] there, [7] here" in message
    message = _refused(
        tmp_path,
        _cfg(init=str(source)),
        CheckpointError,
        "(3, 12) in the checkpoint, (4, 12)",
        facts={**FACTS, "n_classes": 4},
    )
    assert "n_classes 3 there, 4 here" in message

    # NIR graphs that do not fit the data
    def graph_file(name, n_in, n_out, membrane=False):
        net = Network.sequential(
            [torch.nn.Linear(n_in, 5), torch.nn.Linear(5, n_out)],
            tau_m=5e-3,
            threshold=0.3,
            readout="membrane" if membrane else "spikes",
        )
        path = tmp_path / name
        nir.write(str(path), to_nir(net, dt=1e-3))
        return str(path)

    _refused(
        tmp_path,
        _cfg(init=graph_file("in.nir", 10, 3)),
        ValueError,
        "inputs of shape (10,)",
        "gives (24,)",
    )
    _refused(
        tmp_path, _cfg(init=graph_file("out.nir", 24, 5)), ValueError, "5 neurons", "3 classes"
    )
    li = graph_file("li.nir", 24, 3, membrane=True)
    _refused(tmp_path, _cfg(init=li), ValueError, "non-spiking", "loss='membrane'")
    Trainer(
        _cfg(init=li, loss="membrane", epochs=1), tmp_path / "li", quiet=True, splits=_splits()
    ).fit()
    # an imported run is pointed to its model.nir
    imported = tmp_path / "imported"
    imported.mkdir()
    shutil.copyfile(li, imported / "model.nir")
    _refused(tmp_path, _cfg(init=str(imported)), CheckpointError, "imported model", "model.nir")
    # a run fine-tuned from NIR is no init for a configured network
    _refused(tmp_path, _cfg(init=str(tmp_path / "li")), ValueError, "export it")


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("kind", ["run", "nir"])
def test_resuming_a_fine_tuning_ends_as_an_uninterrupted_one(
    tmp_path, source, exported, monkeypatch, one_thread, kind
):
    init = tmp_path / ("init" if kind == "run" else "init.nir")
    copy = shutil.copytree if kind == "run" else shutil.copyfile
    copy(source if kind == "run" else exported, init)
    cfg = _cfg(init=str(init))
    Trainer(cfg, tmp_path / "straight", quiet=True, splits=_splits()).fit()

    calls = {"n": 0}
    real = training.forward

    def interrupting(*args, **kwargs):
        if kwargs.get("training"):
            calls["n"] += 1
            if calls["n"] == 9:  # the third batch of the second epoch
                raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(training, "forward", interrupting)
        with pytest.raises(KeyboardInterrupt):
            Trainer(cfg, tmp_path / "resumed", quiet=True, splits=_splits()).fit()
    _, meta = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    assert (meta["epoch"], meta["batch"]) == (1, 2)
    # the checkpoint wins: the init is neither read nor needed again
    (shutil.rmtree if kind == "run" else lambda p: p.unlink())(init)
    Trainer(cfg, tmp_path / "resumed", quiet=True, splits=_splits()).fit(resume=True)
    a, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    b, meta = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta["config"]["init"] == str(init)
    for name in ("metrics.jsonl", "config.json"):
        assert (tmp_path / "straight" / name).read_text() == (
            tmp_path / "resumed" / name
        ).read_text()
    # another init on resume is refused, as any other changed setting
    with pytest.raises(ValueError, match="init"):
        Trainer(
            _cfg(init=str(source), epochs=3), tmp_path / "resumed", quiet=True, splits=_splits()
        ).fit(resume=True)


# ------------------------------------------------------------------------------ command line
SMALL = [
    "--limit-train",
    "160",
    "--limit-test",
    "40",
    "--epochs",
    "1",
    "--hidden",
    "24",
    "--timesteps",
    "10",
    "--batch-size",
    "32",
    "-q",
]


def test_init_on_the_command_line(tmp_path):
    pytest.importorskip("nir")
    base, ft, ft_nir = tmp_path / "base", tmp_path / "ft", tmp_path / "ft-nir"
    r = CliRunner().invoke(main, ["train", "--out", str(base), *SMALL])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["train", "--init", f"{base}:last", "--out", str(ft), *SMALL])
    assert r.exit_code == 0, r.output
    assert json.loads((ft / "config.json").read_text())["config"]["init"] == f"{base}:last"
    model = tmp_path / "base.nir"
    r = CliRunner().invoke(main, ["export", str(base), "--out", str(model)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        main, ["train", "--init", str(model), "--training", "layered", "--out", str(ft_nir), *SMALL]
    )
    assert r.exit_code == 0, r.output
    model.unlink()
    r = CliRunner().invoke(main, ["train", "--out", str(ft_nir), "--resume", "--epochs", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["epoch"] == 2
    r = CliRunner().invoke(main, ["evaluate", str(ft_nir), "--limit-test", "40", "--json"])
    assert r.exit_code == 0, r.output
    assert 0 <= json.loads(r.output)["accuracy"] <= 1
    r = CliRunner().invoke(
        main, ["train", "--init", str(model), "--out", str(tmp_path / "x"), *SMALL]
    )
    assert r.exit_code == 1 and "no NIR file at" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(
        main, ["train", "--init", str(base), "--out", str(tmp_path / "y"), *SMALL, "--hidden", "8"]
    )
    assert r.exit_code == 1 and "shapes differ" in r.output
    r = CliRunner().invoke(main, ["train", "--help"])
    assert "--init" in r.output and "--init-discretization" in r.output
