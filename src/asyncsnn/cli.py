"""The ``asyncsnn`` command line.

asyncsnn demo                      the study's comparison on the built-in digits, in minutes
asyncsnn train --dataset D ...     train a model layered or with unlayered backprop
asyncsnn evaluate RUN ...          evaluate a trained model under one execution
asyncsnn compare RUN RUN ...       side-by-side table of models under several executions
asyncsnn import MODEL.nir ...      a NIR model into a run directory (then evaluate, compare)
asyncsnn export RUN --out F.nir    a run's model as a NIR graph
asyncsnn encode-audio DIR --out F  a folder of WAV files as cochlear spikes (SHD's HDF5 schema)
asyncsnn reproduce [--budget B]    the study's grid on every data set found, with results.md
asyncsnn sweep GRID.toml           a grid of trainings on Ray Tune (or one after another)
asyncsnn explore RUN --out F.html  step through a sample's forward steps in a browser

``torchrun --nproc-per-node N -m asyncsnn train ...`` trains data-parallel
(:mod:`asyncsnn.distributed`).

Every command that writes a model writes a run directory (:mod:`asyncsnn.rundir`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from functools import partial
from pathlib import Path

from ._program import exit_interrupted, running_as_program

try:  # a Ctrl-C while the modules load is one line, as later
    import click

    from . import __version__
    from .data.registry import available_datasets
    from .dynamics import RESETS
    from .rundir import RunDir, dumps
    from .training import ARCHS, LOSSES, PRESETS, TRAININGS
except KeyboardInterrupt:
    if not running_as_program():
        raise
    exit_interrupted()


class _Commands(click.Group):
    """The command group: Ctrl-C in any command ends it with one line and exit status 130
    (click's default is "Aborted!" and 1); commands that save state say more themselves."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            exit_interrupted()


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="asyncsnn")
def main() -> None:
    """Spiking neural networks run and trained without layer synchronization.

    Train a model layer-synchronously ("layered") or through a simulation of asynchronous,
    event-driven execution ("unlayered"), then compare accuracy, spikes, synaptic operations
    and decision latency under layered and asynchronous execution. Start with `asyncsnn demo`.
    """


# ------------------------------------------------------------------------------ train
def _load_config_file(path: Path) -> dict:
    """The settings of a ``--config`` file: a mapping of TrainConfig keys; anything else is a
    one-line usage error naming the file."""

    def bad(why: str):
        return click.BadParameter(f"{path}: {why}", param_hint="--config")

    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise bad("use a .toml, .yaml/.yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise bad("not a text file") from None
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror or e})") from None
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as e:  # each parser has its own error type
        raise bad(f"not valid {path.suffix[1:].upper()} ({e})") from None
    if not isinstance(data, dict):
        raise bad(f"holds a {type(data).__name__}, not a mapping of settings")
    return data


def _hidden(value, option: str = "--hidden") -> tuple[int, ...]:
    """Integers separated by commas (layer widths, group sizes)."""
    try:
        return tuple(int(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"integers separated by commas, e.g. 128,128; got {value!r}", param_hint=option
        ) from None


class _DatasetName(click.Choice):
    """One of asyncsnn's data sets, or ``tonic:NAME`` for tonic's data set NAME on disk."""

    def __init__(self) -> None:
        super().__init__([*available_datasets(), "tonic:NAME"])

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith("tonic:") and len(value) > len("tonic:"):
            return value
        return super().convert(value, param, ctx)


@main.command()
@click.option(
    "--dataset",
    type=_DatasetName(),
    help="Data set (default digits, the built-in one); tonic:NAME reads tonic's data set NAME "
    "from --data-dir in tonic's layout (e.g. tonic:NMNIST from DIR/NMNIST/Train).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="Folder holding the data set's local copy (never downloaded).",
)
@click.option(
    "--training",
    type=click.Choice(TRAININGS),
    help="layered: surrogate BPTT; unlayered: backprop through asynchronous execution.",
)
@click.option("--scheduler", help="Policy of the asynchronous execution (unlayered training).")
@click.option("--group-size", "-F", type=int, help="Forward group size F.")
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--lr", type=float, help="Learning rate (Adam).")
@click.option("--weight-decay", type=float)
@click.option("--hidden", help="Hidden layer widths, e.g. 128,128.")
@click.option("--arch", type=click.Choice(ARCHS))
@click.option("--tau-m", type=float, help="Membrane time constant in seconds.")
@click.option("--threshold", type=float)
@click.option(
    "--tau-syn",
    type=float,
    help="Synaptic time constant in seconds: current-based LIF neurons (default: none).",
)
@click.option(
    "--reset",
    type=click.Choice(RESETS),
    help="What a spike does to the membrane: zero (V <- 0, default) or subtract "
    "(V <- V - threshold).",
)
@click.option("--dt", type=float, help="Timestep (bin) length in seconds.")
@click.option("--timesteps", type=int)
@click.option("--loss", type=click.Choice(LOSSES))
@click.option("--input-dropout", type=float)
@click.option("--refractory-dropout", type=float)
@click.option("--lambda-ms", type=float, help="Momentum policy's tie-breaking noise.")
@click.option("--spike-reg", type=float, help="Weight of the spike-count regulariser.")
@click.option(
    "--decision-weight",
    type=float,
    help="Weight of the running decision's loss: the mean over timesteps of the "
    "cross-entropy on the output counts so far, beside the rate loss (default 0; spiking "
    "readout only).",
)
@click.option(
    "--silent-gradients/--no-silent-gradients",
    default=None,
    help="Unlayered training: surrogate gradients also through neurons that did not fire.",
)
@click.option(
    "--surrogate-checks",
    type=click.Choice(["every", "last", "firing"]),
    help="Unlayered training: which of a neuron's repeated checks in a timestep pass their "
    "surrogate gradient: every (default), the last, or the firing one (else the last).",
)
@click.option(
    "--mix-schedulers",
    help="Unlayered training: each batch draws its policy from these, e.g. random,momentum.",
)
@click.option(
    "--mix-group-sizes", help="Unlayered training: each batch draws F from these, e.g. 1,8,64."
)
@click.option(
    "--max-queued-per-neuron",
    type=int,
    help="Queue slots per neuron and timestep (refractory dropout lets a neuron fire again; "
    "F = 1 needs more).",
)
@click.option(
    "--first-saccade",
    is_flag=True,
    default=None,
    help="N-MNIST: keep only the first saccade (100 ms).",
)
@click.option("--limit-train", type=int, help="Use N training samples (a stratified subset).")
@click.option("--limit-test", type=int, help="Use N test samples (a stratified subset).")
@click.option("--seed", type=int)
@click.option(
    "--device",
    help="cpu (default), cuda or cuda:N; under torchrun each process takes cuda:LOCAL_RANK.",
)
@click.option(
    "--init",
    metavar="RUN|MODEL.nir",
    help="Fine-tune a trained model: a run directory (its best checkpoint; RUN:last for the "
    "last), whose weights must fit the configured network, or a NIR file (e.g. exported by "
    "snnTorch or Norse), whose graph becomes the network. Optimizer and epochs start afresh.",
)
@click.option(
    "--init-discretization",
    type=click.Choice(["exact", "euler"]),
    help="How a NIR --init's time constants are read at the training's --dt: exact (default) "
    "or euler (snnTorch, SpikingJelly, Norse); see `asyncsnn import`.",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    help="Start from published settings (the study's N-MNIST Table 6; docs/semantics.md, "
    "reference settings).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML, YAML or JSON file of settings; command-line options override it.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option("--resume", is_flag=True, help="Go on from the run directory's last checkpoint.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines.")
def train(config_file, preset, out, resume, quiet, **options) -> None:
    """Train a model into a run directory (config, metrics, checkpoints, plots).

    With --resume the training goes on from the last checkpoint, with the configuration it
    records; only --epochs (more), --data-dir and --device may change. Ctrl-C stops after the
    batch in flight, with the state saved; a resume then ends exactly as an uninterrupted
    training.

    With --init the training starts from a trained model (fine-tuning); a resume continues
    its own checkpoint and reads the init no more."""
    from .checkpoint import CheckpointError
    from .rundir import RunDirBusy
    from .training import TrainConfig, Trainer, recorded_config

    settings: dict = {}
    if preset:
        settings.update(PRESETS[preset])
    try:
        if resume:
            settings.update(recorded_config(out))
    except (CheckpointError, ValueError) as e:
        raise click.ClickException(f"cannot resume: {e}") from None
    if config_file:
        settings.update(_load_config_file(config_file))
    for key, value in options.items():
        if value is None:
            continue
        if key == "hidden":
            value = _hidden(value)
        if key == "mix_schedulers":
            value = [v.strip() for v in value.split(",") if v.strip()]
        if key == "mix_group_sizes":
            value = _hidden(value, "--mix-group-sizes")
        if key == "data_dir":
            value = str(value)
        settings[key] = value
    try:
        cfg = TrainConfig.from_dict(settings)
    except (TypeError, ValueError) as e:
        raise click.UsageError(str(e)) from None
    from . import distributed

    trainer = Trainer(cfg, out, quiet=quiet or not _main_process())
    try:
        line = trainer.fit(resume=resume)
    except KeyboardInterrupt:
        if RunDir(out).checkpoint("last").is_file():
            exit_interrupted(f"interrupted; resume with: asyncsnn train --out {out} --resume")
        exit_interrupted("interrupted before anything was saved; start the training again")
    except (OSError, RunDirBusy, ValueError) as e:  # CheckpointError is a ValueError
        raise click.ClickException(str(e)) from None
    finally:
        distributed.teardown()
    if not _main_process():  # under torchrun only rank 0 speaks
        return
    if trainer.finished_before:
        epochs = trainer.cfg.epochs
        click.echo(
            f"{out}: the training has already finished its {epochs} epochs; nothing to resume "
            f"(--resume --epochs N, N > {epochs}, trains on)",
            err=True,
        )
    click.echo(dumps(line) if quiet else f"done: {out}")


def _main_process() -> bool:
    """Whether this process is rank 0 of a torchrun job (or not under torchrun at all)."""
    return os.environ.get("RANK", "0") in ("", "0")


# ------------------------------------------------------------------------------ evaluate
@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--execution", type=click.Choice(["layered", "async"]), default="async", show_default=True
)
@click.option("--scheduler", default="momentum", show_default=True)
@click.option("--group-size", "-F", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True
)
@click.option("--data-dir", type=click.Path(path_type=Path), help="Override the data folder.")
@click.option(
    "--limit-test",
    type=click.IntRange(min=1),
    help="Evaluate on N test samples only (a stratified subset).",
)
@click.option(
    "--spikes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Evaluate on the recordings of this SHD-schema .h5 file instead (e.g. another "
    "encoder's spikes of the same audio; asyncsnn encode-audio writes such files).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cost-profile",
    default="loihi",
    show_default=True,
    help="Hardware profile of the energy and time figures: loihi, spinnaker2, seneca, "
    "horowitz45 or a FILE.toml (docs/cost.md).",
)
@click.option(
    "--spikes-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the spike log of the evaluated samples to this .h5 file: each "
    "population's spikes, the forward step of every spike, forward steps, SynOps and the "
    "settings, laid out as NIR's data format (docs/spike-log.md).",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --spikes-out: overwrite the spike log at that path (a file that is not a spike "
    "log is never overwritten).",
)
@click.option(
    "--spikes-samples",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="With --spikes-out: log the first N evaluated samples only (the metrics still cover "
    "every sample).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where the models run: cpu, cuda or cuda:N.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    run,
    execution,
    scheduler,
    group_size,
    checkpoint,
    data_dir,
    limit_test,
    spikes,
    seed,
    cost_profile,
    spikes_out,
    force,
    spikes_samples,
    device,
    as_json,
) -> None:
    """Evaluate a trained model on its data set's test split under one execution.

    With --spikes-out the run without stop rule (the one the metrics come from) of the first
    --spikes-samples samples is written as a spike log (docs/spike-log.md).
    """
    from .evaluation import Execution
    from .evaluation import evaluate as do_evaluate
    from .training import load_run, load_spike_file, load_test_split, use_device

    try:
        if spikes_out is not None:  # before the evaluation, which may take long
            from .spikelog import check_target

            check_target(spikes_out, force=force)
        how = Execution(execution, scheduler, group_size)
        net, cfg, facts = load_run(run, checkpoint)
        net.to(use_device(device))
        if data_dir is not None:
            cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
        if limit_test is not None:
            cfg = dataclasses.replace(cfg, limit_test=limit_test)
        if spikes is not None:
            test = load_spike_file(spikes, cfg, facts, progress=not as_json)
        else:
            test = load_test_split(cfg, progress=not as_json)
        keep = spikes_samples if spikes_out is not None else 0
        result = do_evaluate(
            net,
            test,
            cfg,
            how,
            seed=seed,
            cost_profile=cost_profile,
            keep_results=keep,
            progress=not as_json,
        )
        if spikes_out is not None:
            from .spikelog import save_spikes

            n = min(spikes_samples, len(test))
            settings = {
                "run": str(run),
                "checkpoint": checkpoint,
                "dataset": cfg.dataset,
                "spikes_input": None if spikes is None else str(spikes),
                "limit_test": cfg.limit_test,
                "execution": how.execution,
                "policy": how.scheduler,
                "F": how.group_size,
                "lambda_ms": cfg.lambda_ms if how.scheduler == "momentum" else None,
                "seed": seed,
                "batch_size": result["batch_size"],
                "dt": float(cfg.dt),
                "asyncsnn": __version__,
            }
            save_spikes(
                spikes_out,
                result["results"],
                dt=float(cfg.dt),
                settings=settings,
                labels=test.y[:n],
                max_samples=n,
            )
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    out = {
        "run": str(run),
        "execution": result["execution"],
        "engine": result["engine"],
        **result["summary"],
        "cost_profile": result["cost_profile"],
        "stop_on_first_output": result.get("stop_on_first_output"),
        "budget": result["budget"],
        "spikes_per_population": result["spikes_per_population"],
    }
    if spikes_out is not None:
        out["spikes_out"] = str(spikes_out)
    if as_json:
        click.echo(dumps(out))
        return
    click.echo(
        f"{run} under {result['execution']} ({len(test)} test samples, engine: {result['engine']})"
    )
    click.echo(f"  cost profile {result['cost_profile']} (docs/cost.md)")
    for key, value in result["summary"].items():
        click.echo(f"  {key:<28} {value:.4g}")
    if "stop_on_first_output" in result:
        s = result["stop_on_first_output"]
        click.echo(
            f"  stop at first output spike: accuracy {s['accuracy']:.3f}, "
            f"spikes/sample {s['spikes_per_sample']:.1f}"
        )
    if spikes_out is not None:
        n = min(spikes_samples, len(test))
        click.echo(f"  spike log of {n} samples: {spikes_out} (docs/spike-log.md)")


# ------------------------------------------------------------------------------ compare
@main.command()
@click.argument(
    "runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@click.option(
    "--executions",
    default="layered,async-random,async-momentum",
    show_default=True,
    help="Comma-separated: layered, async-POLICY or async-POLICY:F.",
)
@click.option(
    "--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Write results.json, results.md and plots here."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cost-profile",
    default="loihi",
    show_default=True,
    help="Hardware profile of the energy and time figures: loihi, spinnaker2, seneca, "
    "horowitz45 or a FILE.toml (docs/cost.md).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where the models run: cpu, cuda or cuda:N.",
)
def compare(runs, executions, checkpoint, out, seed, cost_profile, device) -> None:
    """Print (and write) the side-by-side table of RUNS under several executions."""
    from .evaluation import Execution
    from .report import compare as do_compare
    from .report import text_table, write_results
    from .training import unfinished, use_device

    try:
        use_device(device)
        hows = [Execution.parse(e) for e in executions.split(",") if e.strip()]
        if not hows:
            raise click.UsageError(
                f"--executions names no execution ({executions!r}): give layered, "
                "async-POLICY or async-POLICY:F, separated by commas"
            )
        named = {}
        for r in runs:
            name = r.name
            while name in named:
                name += "'"
            named[name] = r
            why = unfinished(r)
            if why is not None:
                click.echo(f"warning: {r}: {why}; its {checkpoint} checkpoint may change", err=True)
        rows = do_compare(
            named,
            hows,
            which=checkpoint,
            seed=seed,
            progress=True,
            cost_profile=cost_profile,
            device=device,
        )
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(text_table(rows))
    profile = rows[0]["cost_profile"] if rows else cost_profile
    note = f"Energy and time under the cost profile {profile} (docs/cost.md).\n"
    click.echo(note.rstrip())
    if out is not None:
        write_results(rows, out, notes=note)
        click.echo(f"written: {out}/results.json, results.md, plots")


# ------------------------------------------------------------------------------ audio
@main.command("encode-audio")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .h5 file."
)
@click.option(
    "--encoder",
    type=click.Choice(["builtin", "lauscher"]),
    default="builtin",
    show_default=True,
    help="builtin: asyncsnn's vectorised cochlea; lauscher: the exact model (an extra).",
)
@click.option("--channels", type=click.IntRange(min=1), default=700, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def encode_audio(folder, out, encoder, channels, seed) -> None:
    """Encode every WAV file of FOLDER into cochlear spikes in SHD's HDF5 schema.

    Classes come from subfolders (FOLDER/yes/*.wav, FOLDER/no/*.wav) or from the number that
    starts each file name (3_jackson_0.wav). The file is read by `--dataset shd` (as
    <data>/SHD/shd_train.h5 or shd_test.h5) and by asyncsnn.data.SHD.from_file.
    """
    from .data.audio import encode_folder
    from .data.cochlea import cochlea_events

    settings = {"encoder": encoder, "n_channels": channels, "seed": seed}
    try:
        path = encode_folder(folder, out, partial(cochlea_events, **settings), attrs=settings)
    except (OSError, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"written: {path}")


# ------------------------------------------------------------------------------ NIR
@main.command("import")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dt", type=float, required=True, help="Timestep in seconds (no hidden default).")
@click.option(
    "--discretization",
    type=click.Choice(["exact", "euler"]),
    default="exact",
    show_default=True,
    help="exact: beta = exp(-dt/tau); euler: beta = 1 - dt/tau (snnTorch, SpikingJelly).",
)
@click.option(
    "--dataset",
    type=_DatasetName(),
    default="digits",
    show_default=True,
    help="Data set `evaluate` will use.",
)
@click.option("--data-dir", type=click.Path(path_type=Path))
@click.option("--timesteps", type=int, help="Timesteps per sample (default: the data set's).")
@click.option(
    "--reset",
    type=click.Choice(["zero", "subtract"]),
    default=None,
    help="What a spike does to the membrane (V <- 0, or V <- V - threshold), which NIR "
    "cannot say for a reset by subtraction (snnTorch and Norse write v_reset = 0 for both). "
    "Default: what the graph says (zero, unless asyncsnn's export recorded subtract). The "
    "run directory's copy of the graph records it.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
def import_(model, dt, discretization, dataset, data_dir, timesteps, reset, out) -> None:
    """Import a NIR model into a run directory (then `asyncsnn evaluate` works on it).

    LIF, IF and current-based LIF (CubaLIF) neurons, with LI, I or CubaLI readouts.
    """
    import shutil
    import warnings

    from .interchange import ResetAssumedWarning, from_nir, with_reset
    from .rundir import DataFacts, NIRSource, RunRecord
    from .training import TrainConfig

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            net = from_nir(model, dt=dt, discretization=discretization, reset=reset)
        assumed = any(issubclass(w.category, ResetAssumedWarning) for w in caught)
        for w in caught:
            click.echo(f"warning: {model}: {w.message}", err=True)
        if reset is not None:
            graph = with_reset(model, reset)
        elif assumed:  # the copy records the reset taken, so that every reader agrees
            graph = with_reset(model, {p.name: p.reset for p in net.populations if p.spiking})
        else:
            graph = None
        cfg = TrainConfig(
            dataset=dataset,
            data_dir=str(data_dir) if data_dir else None,
            dt=dt,
            timesteps=timesteps,
            loss="rate" if net.output.spiking else "membrane",
        )
        record = RunRecord(
            config=cfg.to_dict(),
            data=DataFacts(
                input_shape=net.input_shape, n_classes=net.output.size, dt=dt, timesteps=timesteps
            ),
            nir=NIRSource(source=str(model), discretization=discretization),
        )
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    run_dir = RunDir(out)
    if run_dir.holds_run():
        raise click.ClickException(f"{out} already holds a run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if graph is None:
        shutil.copyfile(model, run_dir.nir_path)
    else:  # the graph with its reset recorded, so that the run rebuilds the same network
        import nir

        nir.write(str(run_dir.nir_path), graph)
    run_dir.write_record(record)
    pops = ", ".join(
        f"{p.name}{list(p.shape)}" + (" (reset subtract)" if p.reset == "subtract" else "")
        for p in net.populations
    )
    click.echo(f"imported {model}: input{list(net.input_shape)} -> {pops}; run directory {out}")


@main.command("export")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The .nir file to write.",
)
@click.option(
    "--discretization", type=click.Choice(["exact", "euler"]), default="exact", show_default=True
)
@click.option(
    "--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True
)
def export(run, out, discretization, checkpoint) -> None:
    """Export a run's model as a NIR graph (for other simulators and neuromorphic chips)."""
    from .interchange import to_nir
    from .training import load_run

    try:
        import nir
    except ModuleNotFoundError:
        raise click.ClickException("exporting needs the nir package: pip install nir") from None
    try:
        net, cfg, _ = load_run(run, checkpoint)
        graph = to_nir(net, dt=cfg.dt, discretization=discretization)
        out.parent.mkdir(parents=True, exist_ok=True)
        nir.write(str(out), graph)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out} ({len(graph.nodes)} nodes, dt {cfg.dt:g} s, {discretization})")


# ------------------------------------------------------------------------------ demo
@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/demo"),
    show_default=True,
    help="Run directory of the demo.",
)
@click.option("--epochs", type=int, default=None, help="Epochs per model (default: the demo's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
def demo(out, epochs, seed, quiet) -> None:
    """The study's comparison on the built-in digits data set, in a few minutes on a CPU.

    Trains a layered and an unlayered model, evaluates both under layered, async-random and
    async-momentum execution, prints the table and writes results.json, results.md and PNG
    plots (accuracy against forward-step budget, spikes per layer, a raster of one sample).
    """
    from .demo import run_demo

    try:
        run_demo(out, epochs=epochs, seed=seed, quiet=quiet)
    except KeyboardInterrupt:
        exit_interrupted()


# ------------------------------------------------------------------------------ reproduce
@main.command()
@click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding the data sets' local copies (default $ASYNCSNN_DATA, else ./data): "
    "nmnist or nmnist-subset, mnist, fsdd; the built-in digits need none.",
)
@click.option(
    "--budget",
    type=click.Choice(["quick", "standard", "full"]),
    default="quick",
    show_default=True,
    help="quick: a smoke test of the pipeline, under 30 minutes on a 2-core CPU with -j 2 "
    "(every data set reduced: its figures decide nothing); standard: the run that decides, "
    "under 2.5 hours with -j 2 (the full MNIST-saccades split, the N-MNIST subset with 5 "
    "seeds, the digits, FSDD); full: longer trainings (a GPU or a cluster). docs/results.md "
    "says what each holds.",
)
@click.option("--datasets", help="Only these data sets of the grid, e.g. nmnist,digits.")
@click.option(
    "--recipes",
    help="Training recipes (default: the budget's: layered, unlayered-momentum, unlayered-mix; "
    "also unlayered-random, unlayered-silent, unlayered-silent-mix); layered is always "
    "trained. The headline recipe is chosen among the unlayered ones on validation data.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Trainings in parallel (one process and one thread each).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default runs/reproduce-BUDGET); a second call goes on where the "
    "first stopped.",
)
@click.option(
    "--cost-profile",
    default="loihi",
    show_default=True,
    help="Hardware profile of the energy and time columns (docs/cost.md); a changed profile "
    "evaluates again, without training again.",
)
@click.option(
    "--executor",
    type=click.Choice(["process", "ray"]),
    default="process",
    show_default=True,
    help="process: --jobs worker processes; ray: each training a Ray Tune trial of one CPU, "
    "tried once more where it fails (as `asyncsnn sweep`), on an embedded Ray of --jobs CPUs "
    'or on the cluster at --address (pip install "asyncsnn[sweep]").',
)
@click.option(
    "--address",
    metavar="auto|ray://HOST:PORT",
    help="Run the trainings on this Ray cluster (implies --executor ray).",
)
@click.option(
    "--device",
    default="cpu",
    show_default=True,
    help="Where the trainings and evaluations run: cpu, cuda or cuda:N.",
)
def reproduce(
    data_root, budget, datasets, recipes, jobs, out, cost_profile, executor, address, device
) -> None:
    """The study's grid on every data set found: results.md, results.json and plots.

    Trains the budget's recipes with each data set's seeds, evaluates each model under
    layered, async-random and async-momentum execution with F = 1, 8, 64 and async-fifo F = 8,
    chooses each data set's headline recipe on validation data, and writes each of the study's
    claims as a paired difference against the layered model with its 95 % interval and
    verdict. Finished trainings and evaluations are not run again; an interrupted call goes on
    where it stopped."""
    from .data.registry import default_data_root
    from .reproduce import main_command
    from .reproduce import reproduce as do_reproduce
    from .rundir import RunDirBusy

    root = data_root if data_root is not None else default_data_root()
    folder = out if out is not None else Path(f"runs/reproduce-{budget}")
    names = [d.strip() for d in datasets.split(",") if d.strip()] if datasets else None
    chosen = {"recipes": [r.strip() for r in recipes.split(",") if r.strip()]} if recipes else {}
    from .sweep import TrialsFailed

    try:
        do_reproduce(
            folder,
            data_root=root,
            budget=budget,
            datasets=names,
            jobs=jobs,
            cost_profile=cost_profile,
            command=main_command(),
            say=click.echo,
            executor="ray" if address else executor,
            address=address,
            device=device,
            **chosen,
        )
    except KeyboardInterrupt:
        exit_interrupted(f"interrupted; run the same command again to go on ({folder})")
    except (OSError, ValueError, ImportError, TrialsFailed, RunDirBusy) as e:
        raise click.ClickException(str(e)) from None


# ------------------------------------------------------------------------------ sweep
@main.command()
@click.argument("grid_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--address",
    metavar="auto|ray://HOST:PORT",
    help="Run the trials on a Ray cluster: auto (the cluster `ray start` joined this machine "
    "to) or ray://HOST:PORT (Ray Client). Default: an embedded Ray on this machine, started "
    "and stopped by the command.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of the trials' run directories and the table (default runs/sweep-STEM); a "
    "second call skips the finished trials and resumes the half-finished ones.",
)
@click.option(
    "--cpus",
    type=click.IntRange(min=1),
    help="CPUs the embedded Ray may use (default: [resources] local_cpus, else all).",
)
@click.option("--dry-run", is_flag=True, help="List the trials and what each needs; run nothing.")
def sweep(grid_file, address, out, cpus, dry_run) -> None:
    """Train a grid of settings (GRID_FILE, docs/sweeps.md) with Ray Tune, then compare.

    Every trial trains into its own run directory named from its grid values
    (OUT/training=unlayered,seed=1); a failed trial is tried once more. At the end, the
    `asyncsnn compare` table of every finished trial under the grid's [compare] executions,
    also written to OUT/results.md and results.json. Without Ray (pip install
    "asyncsnn[sweep]") the trials run one after another in this process. Exits with 1 where a
    trial failed on both attempts, after the table of the others."""
    from .sweep import GridError, load_grid, plan
    from .sweep import sweep as do_sweep

    try:
        grid = load_grid(grid_file)
    except GridError as e:
        raise click.ClickException(str(e)) from None
    folder = out if out is not None else grid.default_out()
    if dry_run:
        try:
            planned = plan(grid, folder)
        except (OSError, ValueError) as e:
            raise click.ClickException(str(e)) from None
        for _, run_dir, state in planned:
            click.echo(f"{state:<9} {run_dir}")
        click.echo(f"{len(planned)} trials")
        return
    try:
        result = do_sweep(
            grid,
            folder,
            address=address,
            local_cpus=cpus,
            say=click.echo,
            warn=lambda line: click.echo(line, err=True),
        )
    except KeyboardInterrupt:
        exit_interrupted(f"interrupted; run the same command again to go on ({folder})")
    except (OSError, ValueError, ImportError) as e:
        raise click.ClickException(str(e)) from None
    if result.rows:
        click.echo(result.table)
        click.echo(result.note.rstrip())
        click.echo(f"written: {folder}/results.json, results.md, plots")
    for o in result.failed:
        click.echo(f"failed: {o.name} after {o.attempts} attempt(s): {o.error}", err=True)
    if result.failed:
        click.echo(
            f"{len(result.failed)} of {len(grid.trials)} trials failed; run the same command "
            "again to retry them",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()


# ------------------------------------------------------------------------------ explore
@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--executions",
    default="layered,async-momentum",
    show_default=True,
    help="Comma-separated: layered, async-POLICY or async-POLICY:F.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def explore(run, sample, executions, seed, out) -> None:
    """Write a self-contained HTML page that steps through one test sample's forward steps."""
    from .explore import page, record_run

    try:
        names = [e.strip() for e in executions.split(",") if e.strip()]
        if not names:
            raise click.UsageError(
                f"--executions names no execution ({executions!r}): give layered, "
                "async-POLICY or async-POLICY:F, separated by commas"
            )
        data = record_run(run, sample=sample, executions=names, seed=seed)
        out.write_text(page(data), encoding="utf-8")
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out}")
