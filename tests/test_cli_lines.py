"""The command line ends in one line where it stops: a busy output folder, a list that names
nothing, a resume of a finished training, Ctrl-C while the modules load or while it exits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from asyncsnn.cli import main
from asyncsnn.rundir import RunDir

QUICK = ["--epochs", "1", "--limit-train", "40", "--limit-test", "10", "--timesteps", "5"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("lines") / "run"
    r = CliRunner().invoke(main, ["train", "--out", str(out), *QUICK, "-q"])
    assert r.exit_code == 0, r.output
    return out


def test_reproduce_into_a_folder_another_process_writes_is_one_line(tmp_path):
    out = tmp_path / "rep"
    busy = out / "runs" / "digits" / "layered" / "seed0"
    args = ["reproduce", "--datasets", "digits", "--recipes", "layered", "--out", str(out)]
    with RunDir(busy).lock():
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    assert r.stderr.splitlines() == [
        f"Error: {busy} is being written by process {os.getpid()}; wait for it to finish (or "
        "stop it) before training or resuming into this folder"
    ]
    assert RunDir(busy).written() == []  # nothing of the other writer's was touched


@pytest.mark.parametrize("command", ["compare", "explore"])
@pytest.mark.parametrize("executions", ["", " , "])
def test_an_executions_list_that_names_none_is_refused(finished, tmp_path, command, executions):
    out = ["--out", str(tmp_path / "page.html")] if command == "explore" else []
    r = CliRunner().invoke(main, [command, str(finished), "--executions", executions, *out])
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")]
    assert errors == [
        f"Error: --executions names no execution ({executions!r}): give layered, "
        "async-POLICY or async-POLICY:F, separated by commas"
    ]
    assert r.stdout == "" and not (tmp_path / "page.html").exists()


def test_resume_of_a_finished_training_says_so(finished):
    before = (finished / "metrics.jsonl").read_text()
    r = CliRunner().invoke(main, ["train", "--out", str(finished), "--resume", "-q"])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [
        f"{finished}: the training has already finished its 1 epochs; nothing to resume "
        "(--resume --epochs N, N > 1, trains on)"
    ]
    last = json.loads(before.splitlines()[-1])
    assert json.loads(r.stdout) == last and last["epoch"] == 1  # not {}
    assert (finished / "metrics.jsonl").read_text() == before


def start(args, env=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "asyncsnn", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        **kw,
    )


def test_ctrl_c_while_the_modules_load_is_one_line(tmp_path):
    p = start(["train", "--out", str(tmp_path / "run"), *QUICK], cwd=tmp_path)
    time.sleep(0.4)  # in the imports of torch and numba, which take seconds here
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert err == "interrupted\n" and out == ""


def test_a_second_ctrl_c_while_exiting_is_ignored(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()  # an exit handler that takes a while, as some libraries' do
    (hook / "sitecustomize.py").write_text("import atexit, time\natexit.register(time.sleep, 3)\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"
    p = start(["train", "--out", str(run), *QUICK, "--epochs", "50"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        first = p.stderr.readline()  # the line of the first Ctrl-C, then the exit handler
        assert first.startswith("interrupted"), first
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)  # lands in the exit handler's sleep
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130
    assert err == "", err  # no "Exception ignored in atexit callback", no traceback


def test_ctrl_c_in_any_command_is_one_line_and_130(finished, monkeypatch):
    import asyncsnn.training

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(asyncsnn.training, "load_test_split", interrupted)
    r = CliRunner().invoke(main, ["evaluate", str(finished), "--limit-test", "4"])
    assert r.exit_code == 130
    assert r.stderr == "interrupted\n" and "Aborted" not in r.output
