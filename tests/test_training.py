"""Training, checkpoints and resumption, on a small synthetic task."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from factories import tiny_split

import asyncsnn
import asyncsnn.training as training
from asyncsnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from asyncsnn.evaluation import Execution, evaluate
from asyncsnn.surrogate import ArcTan, FastSigmoid
from asyncsnn.training import TrainConfig, Trainer, load_run

FACTS = {
    "input_shape": [24],
    "timesteps": 8,
    "n_classes": 3,
    "dt": 1e-3,
    "classes": ["a", "b", "c"],
    "train_samples": 120,
    "val_samples": 30,
    "test_samples": 60,
}


@pytest.fixture(scope="module")
def splits():
    return tiny_split(120, 1), tiny_split(30, 2), tiny_split(60, 3), dict(FACTS)


def _cfg(**kw) -> TrainConfig:
    base = {
        "dataset": "synthetic",
        "dt": 1e-3,
        "hidden": (16,),
        "epochs": 3,
        "batch_size": 16,
        "lr": 2e-2,
        "tau_m": 5e-3,
        "threshold": 0.3,
        "input_dropout": 0.2,
    }
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("kind", ["layered", "unlayered"])
def test_training_learns_and_writes_its_run_directory(tmp_path, splits, kind):
    cfg = _cfg(training=kind)
    line = Trainer(cfg, tmp_path / "run", quiet=True, splits=splits).fit()
    assert line["epoch"] == 3
    assert line["val_accuracy"] >= 0.8  # chance is 1/3
    run = tmp_path / "run"
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [ln["epoch"] for ln in lines] == [1, 2, 3]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    for name in (
        "config.json",
        "training.png",
        "checkpoints/last.safetensors",
        "checkpoints/last.json",
        "checkpoints/best.safetensors",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["config"]["training"] == kind
    net, cfg2, facts = load_run(run, "best")
    result = evaluate(net, splits[2], cfg2, Execution.parse("async-momentum"))
    assert result["summary"]["accuracy"] >= 0.8
    assert 0 < result["summary"]["spike_density"] < 1
    assert result["budget"]["accuracy"][-1] == pytest.approx(result["summary"]["accuracy"])


def _weights(run) -> dict:
    tensors, _ = load_checkpoint(run / "checkpoints" / "last.safetensors")
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_resume_after_an_interruption_is_exact(tmp_path, splits, monkeypatch):
    cfg = _cfg(training="unlayered", refractory_dropout=0.5, epochs=3)
    Trainer(cfg, tmp_path / "straight", quiet=True, splits=splits).fit()

    calls = {"n": 0}
    real_forward = training.forward

    def interrupting(*args, **kwargs):
        if kwargs.get("training"):
            calls["n"] += 1
            if calls["n"] == 10:  # the second batch of the second epoch (8 batches per epoch)
                raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(training, "forward", interrupting)
    with pytest.raises(KeyboardInterrupt):
        Trainer(
            _cfg(training="unlayered", refractory_dropout=0.5, epochs=3),
            tmp_path / "resumed",
            quiet=True,
            splits=splits,
        ).fit()
    _, meta = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.safetensors")
    assert (meta["epoch"], meta["batch"]) == (1, 1)  # one batch of the second epoch was done
    monkeypatch.setattr(training, "forward", real_forward)
    with pytest.raises(FileExistsError, match="resume it"):
        Trainer(cfg, tmp_path / "resumed", quiet=True, splits=splits).fit()
    Trainer(cfg, tmp_path / "resumed", quiet=True, splits=splits).fit(resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    straight = (tmp_path / "straight" / "metrics.jsonl").read_text()
    resumed = (tmp_path / "resumed" / "metrics.jsonl").read_text()
    assert straight == resumed


def test_the_same_seed_gives_the_same_model(tmp_path, splits):
    for name in ("a", "b"):
        Trainer(_cfg(epochs=1), tmp_path / name, quiet=True, splits=splits).fit()
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_membrane_readout_and_spike_regulariser(tmp_path, splits):
    cfg = _cfg(loss="membrane", spike_reg=0.1, training="unlayered")
    line = Trainer(cfg, tmp_path / "m", quiet=True, splits=splits).fit()
    assert line["val_accuracy"] >= 0.8
    net, _, _ = load_run(tmp_path / "m")
    assert not net.output.spiking


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("training", "sync", "training must be one of"),
        ("scheduler", "priority", "unknown scheduler"),
        ("lr", 0.0, "lr must be a number > 0"),
        ("epochs", 0, "epochs must be an int >= 1"),
        ("input_dropout", 1.0, r"input_dropout must be a number in \[0, 1\)"),
        ("val_fraction", True, r"val_fraction must be a number in \[0, 1\)"),
        ("weight_decay", float("inf"), "weight_decay must be a finite number >= 0"),
        ("spike_reg", float("inf"), "spike_reg must be a finite number >= 0"),
        ("lambda_ms", float("inf"), "lambda_ms must be a finite number >= 0"),
        ("lambda_ms", float("nan"), "lambda_ms must be a finite number >= 0"),
        ("epochs", True, "epochs must be an int >= 1, got True"),
        ("seed", 1.5, r"seed must be an int in \[0, 2\*\*32\)"),
        ("seed", 2**40, r"seed must be an int in \[0, 2\*\*32\)"),
        ("data_dir", 5, "data_dir must be a string, got 5"),
        ("hidden", "128", "hidden must be a list of layer widths"),
        ("hidden", [1.5], "hidden must be a list of layer widths"),
        ("hidden", (0,), "widths must be >= 1"),
        ("tau_m", float("nan"), "tau_m must be a number > 0"),
        ("surrogate_alpha", 0.0, "surrogate_alpha must be a number > 0"),
        ("surrogate_slope", -25.0, "surrogate_slope must be a number > 0"),
        ("surrogate", "sigmoid", "surrogate must be one of"),
        ("silent_gradients", 1, "silent_gradients must be true or false"),
        ("surrogate_checks", "first", "surrogate_checks must be one of"),
        ("decision_weight", -0.5, "decision_weight must be a finite number >= 0"),
        ("decision_weight", float("inf"), "decision_weight must be a finite number >= 0"),
        ("mix_schedulers", "random", "mix_schedulers must be a list"),
        ("mix_schedulers", ["priority"], "unknown scheduler"),
        ("mix_group_sizes", [8, 0], "mix_group_sizes must be ints >= 1"),
        ("tau_syn", 0.0, "tau_syn must be a number > 0"),
        ("tau_syn", float("inf"), "tau_syn must be finite"),
        ("reset", "half", "reset must be one of"),
    ],
)
def test_config_validation(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value})
    with pytest.raises(ValueError, match="unknown configuration keys"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_a_configuration_is_not_changed_after_validation():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dt = 1e-3
    assert dataclasses.replace(cfg, dt=1e-3).dt == 1e-3 and cfg.dt is None
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        dataclasses.replace(cfg, lr=-1.0)  # a derived configuration is validated again
    assert TrainConfig(hidden=[8, 4]).hidden == (8, 4)


def _surrogate_gradient(fn, x: float) -> float:
    v = torch.tensor([x], requires_grad=True)
    fn(v).sum().backward()
    return float(v.grad[0])


def test_each_surrogate_has_its_own_parameter():
    assert TrainConfig().spike_fn() == ArcTan(alpha=2.0)
    assert TrainConfig(surrogate="fast_sigmoid").spike_fn() == FastSigmoid(slope=25.0)
    # surrogate_alpha is arctan's; it does not reach the fast sigmoid
    fast = TrainConfig(surrogate="fast_sigmoid", surrogate_alpha=7.0, surrogate_slope=10.0)
    assert fast.spike_fn() == FastSigmoid(slope=10.0)
    # dS/dV = 1 / (k |x| + 1)^2 = 1 / (10 * 0.1 + 1)^2 at x = 0.1
    assert _surrogate_gradient(fast.spike_fn(), 0.1) == pytest.approx(0.25)
    # arctan: (alpha / 2) / (1 + (pi alpha x / 2)^2) = 1 at x = 0, alpha = 2
    arctan = TrainConfig(surrogate_alpha=2.0, surrogate_slope=10.0)
    assert _surrogate_gradient(arctan.spike_fn(), 0.0) == pytest.approx(1.0)


def test_checkpoints_are_atomic_safetensors_and_refuse_garbage(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, {"w": torch.arange(4.0)}, {"epoch": 3})
    tensors, meta = load_checkpoint(path)
    assert torch.equal(tensors["w"], torch.arange(4.0)) and meta == {"epoch": 3}
    assert json.loads(path.with_suffix(".json").read_text()) == {"epoch": 3}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors")
    import pickle

    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "p.safetensors")


def test_a_limit_takes_a_stratified_subset():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)  # stored class by class
    idx = training.subset(labels, 10, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [5, 3, 2]
    assert idx.tolist() == sorted(set(idx.tolist()))
    assert torch.equal(idx, training.subset(labels, 10, seed=0))
    assert not torch.equal(idx, training.subset(labels, 10, seed=1))
    # remainders: 7 of 50/30/20 is 3.5, 2.1, 1.4 -> 3 + 2 + 1 = 6, the largest remainder +1
    assert torch.bincount(labels[training.subset(labels, 7, 0)]).tolist() == [4, 2, 1]
    assert training.subset(labels, 100, 0).tolist() == list(range(100))


@pytest.mark.parametrize("kind", ["layered", "unlayered"])
def test_a_recurrent_model_trains(tmp_path, splits, kind):
    cfg = _cfg(training=kind, arch="recurrent", loss="membrane", epochs=2)
    net = training.build_network(cfg, (24,), 3)
    recurrent = [p for p in net.projections if net.is_recurrent(p)]
    assert [(p.source, p.target) for p in recurrent] == [("hidden1", "hidden1")]
    line = Trainer(cfg, tmp_path / "run", quiet=True, splits=splits).fit()
    assert line["val_accuracy"] >= 0.6  # chance is 1/3


def test_a_mix_of_schedules_draws_each_batch_reproducibly():
    """Each batch draws its policy and F from the mixes, the same on every call (a resume
    draws the same), and over many batches every combination occurs; without a mix every
    batch gets ``scheduler`` and ``group_size``."""
    cfg = _cfg(training="unlayered", mix_schedulers=["random", "fifo"], mix_group_sizes=[1, 8, 64])
    draws = [
        (cfg.schedule_for(e, b)[0].name, cfg.schedule_for(e, b)[1])
        for e in range(4)
        for b in range(30)
    ]
    assert draws == [
        (cfg.schedule_for(e, b)[0].name, cfg.schedule_for(e, b)[1])
        for e in range(4)
        for b in range(30)
    ]
    assert set(draws) == {(p, f) for p in ("random", "fifo") for f in (1, 8, 64)}
    counts = {d: draws.count(d) for d in set(draws)}
    assert min(counts.values()) >= 10  # 120 draws over 6 combinations, none starved
    plain = _cfg(scheduler="fifo", group_size=3)
    assert {(plain.schedule_for(0, b)[0].name, plain.schedule_for(0, b)[1]) for b in range(9)} == {
        ("fifo", 3)
    }


def test_training_with_silent_gradients_and_a_mix_of_schedules(tmp_path, splits):
    cfg = _cfg(
        training="unlayered",
        silent_gradients=True,
        surrogate_checks="last",
        mix_schedulers=["random", "momentum"],
        mix_group_sizes=[1, 8],
    )
    line = Trainer(cfg, tmp_path / "s", quiet=True, splits=splits).fit()
    assert line["val_accuracy"] >= 0.8
    recorded = json.loads((tmp_path / "s" / "config.json").read_text())["config"]
    assert recorded["silent_gradients"] is True
    assert recorded["surrogate_checks"] == "last"
    assert recorded["mix_group_sizes"] == [1, 8]
    assert TrainConfig.from_dict(recorded) == cfg


def test_first_saccade_follows_the_data_set_however_its_name_is_spelled():
    from asyncsnn.training import _dataset_options

    assert _dataset_options(TrainConfig(dataset="N-MNIST", first_saccade=True))["first_saccade"]
    with pytest.raises(ValueError, match="applies to the nmnist data set only"):
        _dataset_options(TrainConfig(dataset="digits", first_saccade=True))


@pytest.mark.parametrize("kind", ["layered", "unlayered"])
def test_current_based_neurons_with_subtraction_train_and_reload(tmp_path, splits, kind):
    """``tau_syn`` and ``reset`` build every population so (docs/semantics.md, section 2),
    train, and come back with the run."""
    cfg = _cfg(training=kind, tau_syn=2e-3, reset="subtract")
    net = training.build_network(cfg, (24,), 3)
    assert net.current_based and bool(net.subtract_mask().all())
    torch.testing.assert_close(net.tau_syn, torch.full_like(net.tau_syn, 2e-3))
    line = Trainer(cfg, tmp_path / "run", quiet=True, splits=splits).fit()
    assert line["val_accuracy"] >= 0.8  # chance is 1/3
    loaded, cfg2, _ = load_run(tmp_path / "run")
    assert (cfg2.tau_syn, cfg2.reset) == (2e-3, "subtract")
    assert [p.reset for p in loaded.populations] == ["subtract", "subtract"]
    assert torch.equal(loaded.tau_syn, net.tau_syn)


def test_a_checkpoint_without_synaptic_currents_loads_as_the_plain_lif(tmp_path, splits):
    """A checkpoint written before ``tau_syn`` existed has no such tensor: its neurons have
    no synaptic current."""
    cfg = _cfg(epochs=1)
    Trainer(cfg, tmp_path / "run", quiet=True, splits=splits).fit()
    path = tmp_path / "run" / "checkpoints" / "best.safetensors"
    tensors, meta = load_checkpoint(path)
    assert "model.tau_syn" in tensors
    trained = tensors.pop("model.tau_syn")
    assert not trained.any()
    save_checkpoint(path, tensors, meta)
    loaded, _, _ = load_run(tmp_path / "run")
    assert loaded.tau_syn.shape == trained.shape and not loaded.tau_syn.any()
    assert not loaded.current_based


def test_forward_passes_the_surrogate_accounting_on():
    """``TrainConfig.surrogate_checks`` reaches the engine: training.forward's gradients are
    those of a run with the same setting, and differ from another setting's where neurons are
    checked more than once in a timestep (F = 1)."""
    x = tiny_split(4, 7).x
    labels = torch.tensor([0, 1, 2, 0])

    def grads(checks, direct=False):
        cfg = _cfg(scheduler="fifo", group_size=1, input_dropout=0.0, surrogate_checks=checks)
        torch.manual_seed(3)
        net = training.build_network(cfg, (24,), 3)
        if direct:
            r = asyncsnn.run(
                net,
                x.transpose(0, 1).contiguous(),
                dt=1e-3,
                scheduler="fifo",
                group_size=1,
                seed=0,
                training=True,
                surrogate=cfg.spike_fn(),
                surrogate_checks=checks,
            )
        else:
            r = training.forward(net, x, cfg, training=True, seed=0)
        training.loss_and_scores(r, labels, cfg)[0].backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    every, last = grads("every"), grads("last")
    assert not torch.allclose(every, last)
    torch.testing.assert_close(last, grads("last", direct=True), rtol=0, atol=0)
    torch.testing.assert_close(grads("firing"), grads("firing", direct=True), rtol=0, atol=0)


def _result_with_output_spikes(out_spikes: torch.Tensor):
    """A RunResult of a 2-input, 4-hidden, 3-output network whose output spikes are
    ``out_spikes`` (timesteps, batch, 3) and whose hidden neurons are silent."""
    from asyncsnn.result import RunResult

    net = training.build_network(_cfg(hidden=(4,)), (2,), 3)
    T, B, _ = out_spikes.shape
    spikes = torch.cat([torch.zeros(T, B, 4), out_spikes], 2)
    return RunResult(
        spikes=spikes,
        forward_steps=torch.ones(T, B, dtype=torch.long),
        output_counts=out_spikes.sum(0),
        membrane=None,
        synops=torch.zeros(T, B),
        undelivered=torch.zeros(T, B, dtype=torch.long),
        network=net,
    )


def test_the_running_decision_loss_by_hand():
    """Two timesteps, two samples: the loss is the mean over timesteps and samples of the
    cross-entropy on the counts so far, added with its weight to the rate loss."""
    out = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # t = 0: sample 0 fires output 0, sample 1 none
            [[0.0, 1.0, 1.0], [0.0, 0.0, 2.0]],  # t = 1 (sample 1: refractory dropout, twice)
        ]
    )
    r = _result_with_output_spikes(out)
    labels = torch.tensor([0, 2])
    e = math.e
    # counts so far: sample 0 (1,0,0) then (1,1,1); sample 1 (0,0,0) then (0,0,2)
    expected = ((math.log(e + 2) - 1) + math.log(3) + math.log(3) + (math.log(2 + e**2) - 2)) / 4
    assert float(training.decision_loss(r, labels)) == pytest.approx(expected, rel=1e-6)
    rate = (math.log(3) + math.log(2 + e**2) - 2) / 2  # final counts (1,1,1), (0,0,2)
    loss, scores = training.loss_and_scores(r, labels, _cfg(decision_weight=0.5))
    assert torch.equal(scores, out.sum(0))
    assert float(loss) == pytest.approx(rate + 0.5 * expected, rel=1e-6)
    plain, _ = training.loss_and_scores(r, labels, _cfg())
    assert float(plain) == pytest.approx(rate, rel=1e-6)


def test_the_running_decision_needs_a_spiking_readout():
    with pytest.raises(ValueError, match="decision_weight needs a spiking readout"):
        TrainConfig(loss="membrane", decision_weight=0.5)
    assert TrainConfig(loss="membrane").decision_weight == 0.0


@pytest.mark.parametrize("kind", ["layered", "unlayered"])
def test_the_running_decision_loss_has_gradients_through_each_training(kind):
    """Its gradient reaches every weight through the layered engine and through the
    unlayered training's engine (the numba kernel where it is installed), and is the
    gradient of the weighted sum: rate loss + W x decision loss."""
    x = tiny_split(8, 11).x
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    cfg = _cfg(training=kind, input_dropout=0.0, decision_weight=0.5)
    torch.manual_seed(4)
    net = training.build_network(cfg, (24,), 3)

    def grad(of):
        net.zero_grad(set_to_none=True)
        r = training.forward(net, x, cfg, training=True, seed=0)
        of(r).backward()
        return r, [p.grad.clone() for p in net.parameters()]

    r, total = grad(lambda r: training.loss_and_scores(r, labels, cfg)[0])
    if kind == "unlayered":
        assert r.engine in ("numba", "torch")
        pytest.importorskip("numba")
        assert r.engine == "numba"
    else:
        assert r.engine == "layered"
    assert r.spikes.detach().sum() > 0
    _, decision = grad(lambda r: training.decision_loss(r, labels))
    _, rate = grad(lambda r: training.loss_and_scores(r, labels, _cfg(training=kind))[0])
    for d in decision:  # every weight and bias gets some of the running decision's gradient
        assert torch.isfinite(d).all() and bool(d.any())
    for t, a, d in zip(total, rate, decision, strict=True):
        torch.testing.assert_close(t, a + 0.5 * d, rtol=1e-5, atol=1e-7)


def test_the_grid_recipes_of_the_gradient_options_are_valid_configurations():
    from asyncsnn.reproduce import RECIPES

    for name, recipe in RECIPES.items():
        assert TrainConfig(**recipe).training in ("layered", "unlayered"), name
    last = TrainConfig(**RECIPES["unlayered-momentum-silent-last"])
    assert (last.silent_gradients, last.surrogate_checks, last.scheduler) == (
        True,
        "last",
        "momentum",
    )
    early = TrainConfig(**RECIPES["unlayered-momentum-early"])
    assert (early.decision_weight, early.readout, early.scheduler) == (0.5, "spikes", "momentum")
