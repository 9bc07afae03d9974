"""NIR files as a user hands them over: values that are not numbers or not finite, files nir
cannot read, and a graph that does not say how its neurons reset. Each bad file is one line
naming the file and the problem, and nothing is written."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from asyncsnn.cli import main

nir = pytest.importorskip("nir")
h5py = pytest.importorskip("h5py")

from asyncsnn.interchange import (  # noqa: E402
    RESET_KEY,
    NIRConversionError,
    ResetAssumedWarning,
    from_nir,
    to_nir,
)

DT = 0.01


def graph(weight=None, bias=None, scale=None) -> nir.NIRGraph:
    w = np.ones((2, 3), dtype=np.float32) if weight is None else weight
    b = np.zeros(2, dtype=np.float32) if bias is None else bias
    nodes = [nir.Input(np.array([3]))]
    if scale is not None:
        nodes.append(nir.Scale(scale))
    nodes += [
        nir.Affine(w, b),
        nir.LIF(tau=np.full(2, 0.01), r=np.full(2, 10.0), v_leak=np.zeros(2),
                v_threshold=np.full(2, 0.5), metadata={RESET_KEY: "zero"}),
    ]  # fmt: skip
    return nir.NIRGraph.from_list(*nodes)


def nan_at(shape, index, value=np.nan):
    a = np.ones(shape, dtype=np.float32)
    a[index] = value
    return a


NON_FINITE = {
    "nan weight": (dict(weight=nan_at((2, 3), (0, 1))), "'affine': weight holds 1 NaN"),
    "inf weight": (dict(weight=nan_at((2, 3), (1, 2), np.inf)), "'affine': weight holds 1 NaN"),
    "inf bias": (dict(bias=nan_at((2,), 1, -np.inf)), "'affine': bias holds 1 NaN"),
    "nan scale": (dict(scale=nan_at((3,), 0)), "'scale': scale holds 1 NaN"),
}


def import_(path, out, *more, dt=DT):
    return CliRunner().invoke(
        main, ["import", str(path), "--dt", str(dt), "--out", str(out), *more]
    )


@pytest.mark.parametrize("case", list(NON_FINITE))
def test_nan_or_inf_weights_and_biases_are_refused(tmp_path, case):
    fields, message = NON_FINITE[case]
    path = tmp_path / "model.nir"
    nir.write(path, graph(**fields))
    with pytest.raises(NIRConversionError, match=message) as err:
        from_nir(path, dt=DT)
    assert err.value.source == str(path) and str(err.value).startswith(f"{path}: ")
    with pytest.raises(NIRConversionError, match=message):
        from_nir(graph(**fields), dt=DT)  # a graph object too
    r = import_(path, tmp_path / "run")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [f"Error: {err.value}"]
    assert not (tmp_path / "run").exists()


def test_a_nan_init_is_refused_before_training(tmp_path):
    path = tmp_path / "nan_weight.nir"
    g = nir.NIRGraph.from_list(
        nir.Input(np.array([64])),
        nir.Affine(nan_at((10, 64), (3, 5)), np.zeros(10, dtype=np.float32)),
        nir.LIF(tau=np.full(10, 0.01), r=np.full(10, 1.0), v_leak=np.zeros(10),
                v_threshold=np.full(10, 0.5), metadata={RESET_KEY: "zero"}),
    )  # fmt: skip
    nir.write(path, g)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        main,
        ["train", "--init", str(path), "--epochs", "1", "--limit-train", "40", "--limit-test",
         "10", "--timesteps", "5", "--out", str(out), "-q"],
    )  # fmt: skip
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert line.startswith("Error: ") and str(path) in line and "weight holds 1 NaN" in line
    assert not list(out.glob("checkpoints/*.safetensors"))


def rewrite(src: Path, dst: Path, edit) -> Path:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def replace(f, key, value):
    del f[key]
    f[key] = value


MALFORMED = {
    "unknown node type": (
        lambda f: replace(f, "node/nodes/affine/type", b"Frobnicate"),
        "the node 'affine' has the type 'Frobnicate', unknown to NIR",
    ),
    "no edges": (
        lambda f: f["node"].__delitem__("edges"),
        "the graph '<top>' has no edges",
    ),
    "string weight": (
        lambda f: replace(f, "node/nodes/affine/weight", np.array([[b"a"] * 3] * 2)),
        "'affine': weight must be numbers",
    ),
    "string threshold": (
        lambda f: replace(f, "node/nodes/lif/v_threshold", np.array([b"x", b"y"])),
        "'lif': v_threshold must be numbers",
    ),
    "unequal lengths": (
        lambda f: replace(f, "node/nodes/lif/r", np.full(3, 10.0)),
        "the node 'lif' has fields of unequal shapes: r (3,), tau (2,)",
    ),
    "not HDF5": (None, "not a NIR graph asyncsnn can read (OSError"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_are_one_line_naming_the_file(tmp_path, case):
    edit, message = MALFORMED[case]
    good = tmp_path / "good.nir"
    nir.write(good, graph())
    path = tmp_path / "bad.nir"
    if edit is None:
        path.write_text("not a NIR file")
    else:
        rewrite(good, path, edit)
    with pytest.raises(ValueError) as err:
        from_nir(path, dt=DT)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    out = tmp_path / "run"
    r = import_(path, out)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [f"Error: {err.value}"]
    assert not out.exists()


def test_a_graph_that_does_not_say_its_reset_warns_and_names_the_option(tmp_path):
    g = graph()
    del g.nodes["lif"].metadata[RESET_KEY]
    with pytest.warns(ResetAssumedWarning, match="lif reset to zero.*--reset subtract"):
        net = from_nir(g, dt=DT)
    assert net.output.reset == "zero"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_nir(g, dt=DT, reset="subtract").output.reset == "subtract"
        assert from_nir(g, dt=DT, reset={"lif": "zero"}).output.reset == "zero"
        assert from_nir(graph(), dt=DT).output.reset == "zero"  # its metadata says it
        exported = to_nir(net, DT)  # asyncsnn's own export records every subtraction
        assert RESET_KEY not in exported.nodes["lif"].metadata
        from_nir(exported, dt=DT)


def test_importing_the_braille_subtract_model_says_what_it_assumed(tmp_path, shared_data):
    subtract = shared_data / "nir-models" / "braille_noDelay_noBias_subtract.nir"
    out = tmp_path / "run"
    r = import_(subtract, out, "--discretization", "euler", dt=1e-4)
    assert r.exit_code == 0, r.output
    (warning,) = r.stderr.splitlines()
    assert warning.startswith(f"warning: {subtract}: the graph does not say how")
    assert "lif1.lif, lif2 reset to zero" in warning and "--reset subtract" in warning
    copy = nir.read(out / "model.nir")  # the run's copy records what was taken
    assert copy.nodes["lif2"].metadata[RESET_KEY] == "zero"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # evaluate, export: no second warning
        net = from_nir(out / "model.nir", dt=1e-4, discretization="euler")
    assert {p.reset for p in net.populations if p.spiking} == {"zero"}
    r = import_(
        subtract, tmp_path / "s", "--discretization", "euler", "--reset", "subtract", dt=1e-4
    )
    assert r.exit_code == 0 and r.stderr == ""


def test_a_fine_tuning_from_nir_states_the_reset_with_reset_subtract(tmp_path):
    from asyncsnn.rundir import DataFacts
    from asyncsnn.training import TrainConfig, network_for

    g = graph()
    del g.nodes["lif"].metadata[RESET_KEY]
    path = tmp_path / "init.nir"
    nir.write(path, g)
    facts = DataFacts(input_shape=(3,), n_classes=2, dt=DT, timesteps=5)
    with pytest.warns(ResetAssumedWarning, match="--reset subtract"):
        net = network_for(TrainConfig(init=str(path), dt=DT), facts)
    assert net.output.reset == "zero"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = network_for(TrainConfig(init=str(path), dt=DT, reset="subtract"), facts)
    assert net.output.reset == "subtract"
