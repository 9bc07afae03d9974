"""The command line, end to end on small data."""

from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

from asyncsnn.cli import main

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    runs = {}
    for training in ("layered", "unlayered"):
        out = root / training
        r = CliRunner().invoke(main, ["train", "--training", training, "--out", str(out), *SMALL])
        assert r.exit_code == 0, r.output
        runs[training] = out
    return runs


def test_help_explains_the_commands():
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for command in (
        "demo",
        "train",
        "evaluate",
        "compare",
        "import",
        "export",
        "encode-audio",
        "reproduce",
        "sweep",
        "explore",
    ):
        assert command in r.output
    r = CliRunner().invoke(main, ["train", "--help"])
    assert "--group-size" in r.output and "--preset" in r.output
    assert "--max-queued-per-neuron" in r.output and "--mix-group-sizes" in r.output
    assert "docs/semantics.md" in r.output


@pytest.mark.parametrize("command", ["train", "import"])
def test_data_set_choices_are_the_registered_data_sets(command):
    from asyncsnn.data import available_datasets

    dataset = next(p for p in main.commands[command].params if p.name == "dataset")
    assert list(dataset.type.choices) == [*available_datasets(), "tonic:NAME"]
    assert "digits" in dataset.type.choices and "nmnist" in dataset.type.choices
    assert dataset.type.convert("tonic:NMNIST", dataset, None) == "tonic:NMNIST"
    for bad in ("tonic:", "nmnist2"):
        with pytest.raises(click.BadParameter, match="is not one of"):
            dataset.type.convert(bad, dataset, None)


def test_train_writes_a_run_directory(trained):
    run = trained["unlayered"]
    for name in (
        "config.json",
        "metrics.jsonl",
        "checkpoints/best.safetensors",
        "checkpoints/last.safetensors",
        "training.png",
    ):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["training"] == "unlayered"
    assert cfg["config"]["hidden"] == [24]
    assert cfg["data"]["input_shape"] == [2, 16, 16] and cfg["data"]["timesteps"] == 10


def test_evaluate_prints_json(trained):
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(trained["layered"]),
            "--execution",
            "async",
            "--scheduler",
            "fifo",
            "--group-size",
            "4",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["execution"] == "async-fifo F=4"
    assert 0 <= out["accuracy"] <= 1 and out["spikes_per_sample"] > 0
    assert len(out["budget"]["forward_steps"]) == len(out["budget"]["accuracy"])


def test_compare_prints_and_writes_the_table(trained, tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "compare",
            str(trained["layered"]),
            str(trained["unlayered"]),
            "--executions",
            "layered,async-random:4",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "async-random F=4" in r.output and "unlayered" in r.output
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(x["model"], x["execution"]) for x in rows] == [
        ("layered", "layered"),
        ("layered", "async-random F=4"),
        ("unlayered", "layered"),
        ("unlayered", "async-random F=4"),
    ]
    assert (tmp_path / "results.md").read_text().count("\n|") >= 5
    assert (tmp_path / "accuracy_vs_budget.png").is_file()


def test_compare_warns_about_an_unfinished_run(trained, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(trained["layered"], run)
    last = run / "checkpoints" / "last.json"
    meta = json.loads(last.read_text())
    assert meta["epoch"] == meta["config"]["epochs"]
    r = CliRunner().invoke(main, ["compare", str(run), "--executions", "layered"])
    assert r.exit_code == 0 and "warning" not in r.output
    meta["epoch"] -= 1  # as a training still running would have it
    last.write_text(json.dumps(meta))
    r = CliRunner().invoke(main, ["compare", str(run), "--executions", "layered"])
    assert r.exit_code == 0
    epochs = meta["config"]["epochs"]
    assert f"has trained {epochs - 1} of {epochs} epochs" in r.output


def test_config_file_with_overrides(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('training = "layered"\nhidden = [8]\nlr = 0.01\nepochs = 3\n')
    r = CliRunner().invoke(
        main, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), *SMALL]
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert saved["training"] == "layered" and saved["lr"] == 0.01
    assert saved["hidden"] == [24] and saved["epochs"] == 1  # the command line wins


def test_clear_errors(tmp_path):
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "nmnist",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "r"),
            "-q",
        ],
    )
    assert r.exit_code == 1
    assert "Error:" in r.output and "nowhere" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "--lr", "-1", "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "lr must be a number > 0" in r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path), "--executions", "sync"])
    assert r.exit_code == 1 and "an execution is 'layered' or 'async-POLICY" in r.output


def test_train_on_real_nmnist(shared_data, tmp_path):
    out = tmp_path / "nmnist"
    r = CliRunner().invoke(
        main,
        [
            "train",
            "--dataset",
            "nmnist",
            "--data-dir",
            str(shared_data / "nmnist-subset"),
            "--out",
            str(out),
            "--limit-train",
            "48",
            "--limit-test",
            "16",
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--timesteps",
            "5",
            "--batch-size",
            "16",
            "--first-saccade",
            "-q",
        ],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["input_shape"] == [2, 34, 34]
    assert saved["config"]["first_saccade"] is True


def test_demo_smoke(tmp_path):
    from asyncsnn.demo import run_demo

    rows = run_demo(tmp_path / "demo", epochs=1, quiet=True, limit_train=120, limit_test=30)
    assert len(rows) == 6
    for name in (
        "results.json",
        "results.md",
        "accuracy_vs_budget.png",
        "spikes_per_layer.png",
        "raster.png",
    ):
        assert (tmp_path / "demo" / name).is_file(), name


def test_export_then_import_evaluates_the_same(trained, tmp_path):
    pytest.importorskip("nir")
    model = tmp_path / "model.nir"
    r = CliRunner().invoke(main, ["export", str(trained["unlayered"]), "--out", str(model)])
    assert r.exit_code == 0, r.output
    assert model.is_file()
    r = CliRunner().invoke(
        main,
        [
            "import",
            str(model),
            "--dt",
            "0.01",
            "--dataset",
            "digits",
            "--timesteps",
            "10",
            "--out",
            str(tmp_path / "imported"),
        ],
    )
    assert r.exit_code == 0, r.output
    results = []
    for run in (trained["unlayered"], tmp_path / "imported"):
        r = CliRunner().invoke(
            main, ["evaluate", str(run), "--scheduler", "fifo", "--limit-test", "40", "--json"]
        )
        assert r.exit_code == 0, r.output
        results.append(json.loads(r.output))
    for key in ("accuracy", "spikes_per_sample", "synops_per_sample", "forward_steps_per_timestep"):
        assert results[0][key] == results[1][key], key
    r = CliRunner().invoke(
        main, ["import", str(model), "--dt", "0.01", "--out", str(tmp_path / "imported")]
    )
    assert r.exit_code == 1 and "already holds a run" in r.output


def _one_line_error(r, *needles):
    """A failed command that printed one ``Error:`` line (no traceback) holding ``needles``."""
    assert r.exit_code in (1, 2), (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception  # not an uncaught exception
    assert "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if "Error:" in ln]
    assert len(errors) == 1, r.output
    for needle in needles:
        assert needle in errors[0], r.output


def test_one_line_errors_for_bad_settings_files_and_runs(trained, tmp_path):
    out = str(tmp_path / "r")
    bad = {
        "invalid.toml": (b"lr = = 1\n", "not valid TOML"),
        "list.json": (b"[1, 2]\n", "holds a list, not a mapping"),
        "binary.json": (b"\xff\xfe\x00\x01", "not a text file"),
        "seed.toml": (b"seed = 1.5\n", "seed must be an int"),
        "data.toml": (b"data_dir = 5\n", "data_dir must be a string"),
        "decay.toml": (b"weight_decay = inf\n", "weight_decay must be a finite number"),
        "reg.toml": (b"spike_reg = inf\n", "spike_reg must be a finite number"),
        "lam.toml": (b"lambda_ms = inf\n", "lambda_ms must be a finite number"),
        "epochs.json": (b'{"epochs": true}', "epochs must be an int >= 1"),
    }
    for name, (content, message) in bad.items():
        (tmp_path / name).write_bytes(content)
        r = CliRunner().invoke(main, ["train", "--config", str(tmp_path / name), "--out", out])
        _one_line_error(r, message)
    (tmp_path / "folder.toml").mkdir()
    r = CliRunner().invoke(main, ["train", "--config", str(tmp_path / "folder.toml"), "--out", out])
    _one_line_error(r, "is a directory")
    r = CliRunner().invoke(main, ["train", "--hidden", "a,b", "--out", out])
    _one_line_error(r, "--hidden", "128,128")
    r = CliRunner().invoke(main, ["train", "--seed", str(2**70), "--out", out])
    _one_line_error(r, "seed must be an int in [0, 2**32)")
    r = CliRunner().invoke(main, ["evaluate", str(trained["layered"]), "--limit-test", "-5"])
    _one_line_error(r, "--limit-test")
    r = CliRunner().invoke(main, ["evaluate", str(trained["layered"]), "-F", "0"])
    _one_line_error(r, "--group-size")
    r = CliRunner().invoke(main, ["compare", str(trained["layered"]), "--executions", "async:0"])
    _one_line_error(r, "F must be an int >= 1, got 0")
    # run directories that are not what they should be
    for name, text, message in [
        ("invalid", "{not json", "not JSON"),
        ("list", "[]", "holds a list"),
        ("noconfig", '{"data": {}}', "needs a 'config' entry"),
    ]:
        run = tmp_path / name
        shutil.copytree(trained["layered"], run)
        (run / "config.json").write_text(text)
        (run / "checkpoints" / "best.safetensors").unlink()  # load_run reads config.json
        (run / "model.nir").write_text("")  # as an imported run does
        r = CliRunner().invoke(main, ["evaluate", str(run)])
        _one_line_error(r, message)


def test_one_line_errors_for_checkpoints_that_do_not_fit(trained, tmp_path):
    from asyncsnn.checkpoint import load_checkpoint, save_checkpoint

    other = tmp_path / "other"
    shutil.copytree(trained["layered"], other)
    best = other / "checkpoints" / "best.safetensors"
    tensors, meta = load_checkpoint(best)
    meta["config"]["hidden"] = [7]  # another architecture than the tensors hold
    save_checkpoint(best, tensors, meta)
    _one_line_error(CliRunner().invoke(main, ["evaluate", str(other)]), "does not fit")
    save_checkpoint(best, tensors, {})
    _one_line_error(CliRunner().invoke(main, ["evaluate", str(other)]), "needs a 'config'")
    last = other / "checkpoints" / "last.safetensors"
    save_checkpoint(last, tensors, {})
    r = CliRunner().invoke(main, ["train", "--out", str(other), "--resume"])
    _one_line_error(r, "cannot resume", "not a run record")


def test_evaluate_reads_the_test_split_only(trained, monkeypatch):
    import asyncsnn.data

    real = asyncsnn.data.load_dataset

    def test_only(name, *, train, **kw):
        assert not train, "evaluate loaded the training split"
        return real(name, train=train, **kw)

    monkeypatch.setattr(asyncsnn.data, "load_dataset", test_only)
    r = CliRunner().invoke(main, ["evaluate", str(trained["layered"])])
    assert r.exit_code == 0, r.output
    assert "(40 test samples, engine: numba)" in r.output


def test_resume_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--out", str(out), *SMALL]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "config.json").unlink()  # the checkpoint records the configuration
    r = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--epochs", "2", "-q"])
    assert r.exit_code == 0, r.output
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["hidden"] == [24] and saved["limit_train"] == 160 and saved["epochs"] == 2
    r = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--lr", "0.1"])
    _one_line_error(
        r, "lr (recorded 0.0005, given 0.1)", "only epochs, data_dir, device may change"
    )
    for name in ("last", "best"):
        (out / "checkpoints" / f"{name}.safetensors").unlink()
    r = CliRunner().invoke(main, args)  # never overwrites config.json and metrics
    _one_line_error(r, "already holds a run")


def test_ctrl_c_while_loading_the_data_says_nothing_was_saved(tmp_path, monkeypatch):
    import asyncsnn.training

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        mp.setattr(asyncsnn.training, "load_splits", interrupted)
        r = CliRunner().invoke(main, ["train", "--out", str(out), *SMALL])
    assert r.exit_code == 130
    assert "interrupted before anything was saved" in r.output and "--resume" not in r.output
    assert not (out / "config.json").exists()
    r = CliRunner().invoke(main, ["train", "--out", str(out), *SMALL])  # starts afresh
    assert r.exit_code == 0, r.output


def test_encode_audio_writes_a_file_the_shd_loader_reads(tmp_path):
    import wave

    import numpy as np

    from asyncsnn.data import SHD

    folder = tmp_path / "audio"
    folder.mkdir()
    t = np.arange(1600) / 8000
    for name, freq in [("1_a_0.wav", 500.0), ("2_a_0.wav", 2000.0)]:
        with wave.open(str(folder / name), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(8000)
            f.writeframes((np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes())
    out = tmp_path / "spikes.h5"
    r = CliRunner().invoke(
        main, ["encode-audio", str(folder), "--out", str(out), "--channels", "64"]
    )
    assert r.exit_code == 0, r.output
    data = SHD.from_file(out, dt=0.01, n_timesteps=20)
    assert data.targets == [1, 2] and len(data.events(0)) > 0
    assert int(data.events(0)["x"].max()) < 64
    r = CliRunner().invoke(main, ["encode-audio", str(tmp_path / "spikes.h5"), "--out", str(out)])
    _one_line_error(r, "is a file")


def test_train_with_current_based_neurons_and_subtraction(tmp_path):
    out = tmp_path / "cuba"
    args = ["train", "--tau-syn", "2e-3", "--reset", "subtract", "--out", str(out), *SMALL]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["tau_syn"], cfg["reset"]) == (2e-3, "subtract")
    r = CliRunner().invoke(main, ["train", "--reset", "half", "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and "'half' is not one of 'zero', 'subtract'" in r.output


def test_train_with_the_gradient_options_records_them(tmp_path):
    """--silent-gradients, --surrogate-checks and --decision-weight reach the recorded
    configuration; a bad value is one clear error."""
    out = tmp_path / "opts"
    args = ["train", "--silent-gradients", "--surrogate-checks", "last"]
    args += ["--decision-weight", "0.5", "--out", str(out), *SMALL]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["silent_gradients"], cfg["surrogate_checks"], cfg["decision_weight"]) == (
        True,
        "last",
        0.5,
    )
    bad = str(tmp_path / "bad")
    r = CliRunner().invoke(main, ["train", "--surrogate-checks", "first", "--out", bad])
    _one_line_error(r, "--surrogate-checks", "'first' is not one of 'every', 'last', 'firing'")
    r = CliRunner().invoke(main, ["train", "--decision-weight", "-1", "--out", bad])
    _one_line_error(r, "decision_weight must be a finite number >= 0")
    r = CliRunner().invoke(
        main, ["train", "--loss", "membrane", "--decision-weight", "0.5", "--out", bad]
    )
    _one_line_error(r, "decision_weight needs a spiking readout")
