"""The run directory: its records round-trip, training writes what load_run reads, an imported
run reads the same way, and no JSON file can hold NaN or Infinity."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from factories import tiny_split
from torch import nn

import asyncsnn
from asyncsnn.checkpoint import load_checkpoint
from asyncsnn.report import write_results
from asyncsnn.rundir import (
    DataFacts,
    NIRSource,
    RunDir,
    RunRecord,
    dumps,
    jsonable,
    write_json,
)
from asyncsnn.training import TrainConfig, Trainer, load_run, unfinished

FACTS = DataFacts(
    input_shape=(24,),
    timesteps=8,
    n_classes=3,
    dt=1e-3,
    classes=("a", "b", "c"),
    train_samples=48,
    val_samples=12,
    test_samples=24,
)


def _strict_loads(text: str):
    """``json.loads`` that refuses NaN and Infinity, as every other JSON reader does."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------ JSON
def test_jsonable_maps_non_finite_floats_to_null_and_tensors_to_lists():
    value = {
        "nan": float("nan"),
        "inf": float("inf"),
        "-inf": -float("inf"),
        "ok": 0.25,
        "tensor": torch.tensor([[1.0, float("nan")], [float("-inf"), 2.0]]),
        "scalar": torch.tensor(float("inf")),
        "ints": torch.tensor([1, 2]),
        "tuple": (1, (2.5, float("nan"))),
        7: "key",
        "flag": True,
        "none": None,
    }
    assert jsonable(value) == {
        "nan": None,
        "inf": None,
        "-inf": None,
        "ok": 0.25,
        "tensor": [[1.0, None], [None, 2.0]],
        "scalar": None,
        "ints": [1, 2],
        "tuple": [1, [2.5, None]],
        "7": "key",
        "flag": True,
        "none": None,
    }
    text = dumps(value, indent=2)
    assert "NaN" not in text and "Infinity" not in text
    assert _strict_loads(text)["tensor"] == [[1.0, None], [None, 2.0]]


def test_dumps_refuses_what_is_not_json():
    with pytest.raises(TypeError):
        dumps({"path": object()})


def test_results_json_holds_no_infinity(tmp_path):
    row = {
        "model": "m",
        "training": "layered",
        "execution": "layered",
        "accuracy": 0.5,
        "latency_steps_median": float("inf"),
        "latency_spikes_median": float("nan"),
        "budget": {"forward_steps": [], "accuracy": []},
        "spikes_per_population": {},
    }
    write_results([row], tmp_path)
    rows = _strict_loads((tmp_path / "results.json").read_text())
    assert rows[0]["accuracy"] == 0.5
    assert rows[0]["latency_steps_median"] is None
    assert rows[0]["latency_spikes_median"] is None


def test_write_json_is_atomic_and_strict(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("-inf"), "y": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "x": null,\n  "y": [\n    1,\n    2\n  ]\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


# ------------------------------------------------------------------------------ records
def test_data_facts_round_trip():
    d = FACTS.to_dict()
    assert d == {
        "input_shape": [24],
        "timesteps": 8,
        "n_classes": 3,
        "dt": 1e-3,
        "classes": ["a", "b", "c"],
        "train_samples": 48,
        "val_samples": 12,
        "test_samples": 24,
    }
    assert DataFacts.from_dict(json.loads(json.dumps(d))) == FACTS
    assert DataFacts.from_dict(d).input_shape == (24,)  # a list in JSON, a tuple in Python


def test_data_facts_of_an_imported_run_leave_the_unknown_as_none():
    # the keys ``asyncsnn import`` wrote before the run directory had one schema
    old = {"input_shape": [2, 16, 16], "n_classes": 10, "dt": 0.01, "timesteps": None}
    facts = DataFacts.from_dict(old)
    assert facts.input_shape == (2, 16, 16) and facts.n_classes == 10 and facts.dt == 0.01
    assert facts.timesteps is None and facts.classes is None and facts.test_samples is None
    d = facts.to_dict()
    assert d["input_shape"] == [2, 16, 16] and d["classes"] is None and d["train_samples"] is None
    assert DataFacts.from_dict(d) == facts


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dt": 0.0}, "dt must be a finite number of seconds > 0"),
        ({"dt": float("nan")}, "dt must be a finite number of seconds > 0"),
        ({"input_shape": ()}, "input_shape must be positive ints"),
        ({"input_shape": (2, 0)}, "input_shape must be positive ints"),
        ({"n_classes": 0}, "n_classes must be an int >= 1"),
        ({"timesteps": 0}, "timesteps must be an int >= 1 or None"),
        ({"test_samples": -1}, "test_samples must be an int >= 0 or None"),
        ({"classes": "abc"}, "classes must be a sequence of names"),
    ],
)
def test_data_facts_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(FACTS, **change)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown data facts keys \['sample_rate'\]"):
        DataFacts.from_dict({**FACTS.to_dict(), "sample_rate": 1})
    with pytest.raises(ValueError, match="needs a 'data' entry"):
        RunRecord.from_dict({"config": {}})


def test_run_record_round_trip_with_and_without_nir():
    trained = RunRecord(config=TrainConfig(dt=1e-3).to_dict(), data=FACTS)
    d = trained.to_dict()
    assert sorted(d) == ["config", "data"]
    assert RunRecord.from_dict(json.loads(dumps(d))) == trained
    imported = dataclasses.replace(trained, nir=NIRSource("model.nir", "euler"))
    d = imported.to_dict()
    assert d["nir"] == {"source": "model.nir", "discretization": "euler"}
    assert RunRecord.from_dict(json.loads(dumps(d))) == imported


# ------------------------------------------------------------------------------ the folder
def test_run_dir_paths(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.config_path == tmp_path / "r" / "config.json"
    assert run.metrics_path == tmp_path / "r" / "metrics.jsonl"
    assert run.curves_path == tmp_path / "r" / "training.png"
    assert run.nir_path == tmp_path / "r" / "model.nir"
    assert run.checkpoint("last") == tmp_path / "r" / "checkpoints" / "last.safetensors"
    assert run.checkpoint_json("best") == tmp_path / "r" / "checkpoints" / "best.json"
    with pytest.raises(ValueError, match="a checkpoint is one of"):
        run.checkpoint("worst")
    assert not run.holds_run() and not run.is_imported()
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run.read_record()


def test_config_json_round_trip(tmp_path):
    run = RunDir(tmp_path / "r")
    record = RunRecord(config={"epochs": 2}, data=FACTS)
    run.write_record(record)
    assert run.holds_run()
    assert run.read_record() == record
    assert json.loads(run.config_path.read_text())["data"]["classes"] == ["a", "b", "c"]


def test_metrics_append_read_and_trim(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_metrics() == []
    run.trim_metrics(0)  # nothing to trim
    assert not run.metrics_path.exists()
    for epoch in (1, 2, 3):
        run.append_metrics({"epoch": epoch, "val_accuracy": float("nan") if epoch == 2 else 0.5})
    assert run.read_metrics() == [
        {"epoch": 1, "val_accuracy": 0.5},
        {"epoch": 2, "val_accuracy": None},
        {"epoch": 3, "val_accuracy": 0.5},
    ]
    for line in run.metrics_path.read_text().splitlines():
        _strict_loads(line)
    run.trim_metrics(2)
    assert [ln["epoch"] for ln in run.read_metrics()] == [1, 2]
    run.trim_metrics(0)
    assert run.read_metrics() == [] and run.metrics_path.read_text() == ""


# ------------------------------------------------------------------------------ training
def test_a_trained_run_reads_back_through_load_run(tmp_path):
    splits = (tiny_split(48, 1), tiny_split(12, 2), tiny_split(24, 3), FACTS)
    cfg = TrainConfig(dataset="synthetic", hidden=(8,), epochs=2, batch_size=16, lr=1e-2)
    assert cfg.dt is None  # the data's dt is resolved by the training
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, splits=splits)
    trainer.fit()
    assert cfg.dt is None  # the caller's configuration is left alone
    assert trainer.cfg == dataclasses.replace(cfg, dt=1e-3)
    run = RunDir(tmp_path / "run")
    record = run.read_record()
    assert record == RunRecord(config=trainer.cfg.to_dict(), data=FACTS)
    assert record.nir is None and not run.is_imported()
    _, meta = load_checkpoint(run.checkpoint("best"))
    assert RunRecord.from_dict(meta) == record  # each checkpoint describes its model
    assert json.loads(run.checkpoint_json("last").read_text())["epoch"] == 2
    assert [ln["epoch"] for ln in run.read_metrics()] == [1, 2]
    assert run.curves_path.is_file()
    assert unfinished(run.path) is None

    net, cfg2, facts = load_run(run.path, "last")
    assert cfg2 == trainer.cfg and facts == FACTS
    tensors, _ = load_checkpoint(run.checkpoint("last"))
    for name, value in net.state_dict().items():
        assert torch.equal(value, tensors[f"model.{name}"]), name


def test_load_run_reads_a_checkpoint_without_data_facts(tmp_path):
    """An older checkpoint left the data facts to ``config.json``."""
    from asyncsnn.checkpoint import save_checkpoint

    splits = (tiny_split(32, 1), tiny_split(8, 2), tiny_split(8, 3), FACTS)
    cfg = TrainConfig(dataset="synthetic", dt=1e-3, hidden=(8,), epochs=1, batch_size=16)
    Trainer(cfg, tmp_path, quiet=True, splits=splits).fit()
    run = RunDir(tmp_path)
    tensors, meta = load_checkpoint(run.checkpoint("best"))
    del meta["data"]
    save_checkpoint(run.checkpoint("best"), tensors, meta)
    _, cfg2, facts = load_run(tmp_path)
    assert facts == FACTS and cfg2 == cfg


# ------------------------------------------------------------------------------ imported
def test_an_imported_run_reads_back_through_load_run(tmp_path):
    nir = pytest.importorskip("nir", reason="NIR support needs the nir package")
    from asyncsnn.cli import main

    torch.manual_seed(0)
    net = asyncsnn.Network.sequential(
        [nn.Linear(24, 16), nn.Linear(16, 3)], tau_m=5e-3, threshold=0.3
    )
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    model = tmp_path / "m.nir"
    nir.write(model, asyncsnn.to_nir(net, 1e-3, "euler"))
    out = tmp_path / "imported"
    r = CliRunner().invoke(
        main,
        [
            "import",
            str(model),
            "--dt",
            "1e-3",
            "--discretization",
            "euler",
            "--timesteps",
            "8",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    run = RunDir(out)
    assert run.is_imported() and run.nir_path.read_bytes() == model.read_bytes()
    record = run.read_record()
    assert record.nir == NIRSource(str(model), "euler")
    assert record.data == DataFacts(input_shape=(24,), timesteps=8, n_classes=3, dt=1e-3)
    assert record.config["dataset"] == "digits" and record.config["dt"] == 1e-3
    assert unfinished(out) is None

    loaded, cfg, facts = load_run(out)
    assert facts == record.data and cfg.dt == 1e-3
    x = (torch.rand(8, 4, 24, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    with torch.no_grad():
        expected = asyncsnn.run(net, x, dt=1e-3, execution="layered").spikes
        got = asyncsnn.run(loaded, x, dt=1e-3, execution="layered").spikes
    assert expected.sum() > 0
    assert torch.equal(got, expected)


def test_an_imported_run_of_the_earlier_format_still_loads(tmp_path):
    nir = pytest.importorskip("nir", reason="NIR support needs the nir package")
    torch.manual_seed(0)
    net = asyncsnn.Network.sequential([nn.Linear(6, 2)], tau_m=5e-3, threshold=0.3)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    nir.write(tmp_path / "model.nir", asyncsnn.to_nir(net, 1e-3, "exact"))
    old = {
        "config": TrainConfig(dt=1e-3, loss="rate").to_dict(),
        "data": {"input_shape": [6], "n_classes": 2, "dt": 1e-3, "timesteps": None},
        "nir": {"source": "elsewhere/model.nir", "discretization": "exact"},
    }
    (tmp_path / "config.json").write_text(json.dumps(old, indent=2))
    loaded, cfg, facts = load_run(tmp_path)
    assert facts == DataFacts(input_shape=(6,), n_classes=2, dt=1e-3)
    assert cfg.dt == 1e-3 and loaded.input_shape == (6,)
    x = (torch.rand(8, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    with torch.no_grad():
        expected = asyncsnn.run(net, x, dt=1e-3, execution="layered").spikes
        got = asyncsnn.run(loaded, x, dt=1e-3, execution="layered").spikes
    assert expected.sum() > 0
    assert torch.equal(got, expected)
