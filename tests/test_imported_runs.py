"""An imported model's run directory (``asyncsnn import``) is not a training: a training or a
resume into it is one line that says how to fine-tune it instead, and nothing in it changes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from torch import nn

import asyncsnn
from asyncsnn.cli import main

nir = pytest.importorskip("nir")

from asyncsnn.interchange import to_nir  # noqa: E402

QUICK = ["--epochs", "1", "--limit-train", "40", "--limit-test", "10", "--timesteps", "5", "-q"]


@pytest.fixture
def imported(tmp_path):
    model = tmp_path / "model.nir"
    net = asyncsnn.Network.sequential([nn.Flatten(), nn.Linear(512, 10)], input_shape=(2, 16, 16))
    nir.write(model, to_nir(net, 0.01, "euler"))
    run = tmp_path / "imp"
    r = CliRunner().invoke(
        main, ["import", str(model), "--dt", "0.01", "--discretization", "euler", "--out", str(run)]
    )
    assert r.exit_code == 0, r.output
    return run


def snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.mark.parametrize("resume", [False, True], ids=["train", "resume"])
def test_training_into_an_imported_run_is_refused_and_changes_nothing(imported, resume):
    before = snapshot(imported)
    args = ["train", "--out", str(imported), *(["--resume"] if resume else []), *QUICK]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    (line,) = r.stderr.splitlines()
    advice = f"asyncsnn train --init {imported}/model.nir --init-discretization euler --dt 0.01"
    assert line == (
        f"Error: {imported} holds an imported model (model.nir), not a training: there is "
        f"nothing to resume or train in it; to train it, fine-tune it into another folder: "
        f"{advice} --out NEW"
    )
    assert "resume it (--resume)" not in line
    assert snapshot(imported) == before  # config.json keeps its NIR record; no lock file
    assert not (imported / "checkpoints").exists()
    r = CliRunner().invoke(main, ["evaluate", str(imported), "--limit-test", "10", "--json"])
    assert r.exit_code == 0, r.output


def test_the_advised_fine_tuning_trains(imported, tmp_path):
    new = tmp_path / "new"
    advice = ["--init", f"{imported}/model.nir", "--init-discretization", "euler", "--dt", "0.01"]
    r = CliRunner().invoke(main, ["train", *advice, "--out", str(new), *QUICK])
    assert r.exit_code == 0, r.output
    assert (new / "checkpoints" / "last.safetensors").is_file()
    r = CliRunner().invoke(main, ["train", "--out", str(new), "--resume", *QUICK])
    assert r.exit_code == 0, r.output  # the fine-tuning itself resumes
