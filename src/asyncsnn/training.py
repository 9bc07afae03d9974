"""Training: layered (surrogate BPTT) and unlayered backprop through asynchronous execution.

:class:`TrainConfig` holds every setting (validated on construction); :class:`Trainer` runs
the training into a run directory (its layout: :mod:`asyncsnn.rundir`)::

    RUN/config.json             the resolved configuration and the data facts
    RUN/metrics.jsonl           one line per epoch (train loss and accuracy, validation)
    RUN/checkpoints/last.*      model + optimizer + position, after every epoch (and on Ctrl-C)
    RUN/checkpoints/best.*      the model of the best validation accuracy
    RUN/training.png            loss and accuracy curves

Training resumes exactly from ``last`` (model, optimizer, learning-rate schedule, epoch and
batch): the data order and every random decision are functions of the seed, the epoch and
the batch index, never of hidden generator state.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)
from .execution import RunResult, run
from .hooks import InputSpikeDropout
from .network import Network
from .rng import hash32
from .rundir import DataFacts, RunDir, RunRecord, checkpoint_meta
from .scheduling import Momentum, get_scheduler
from .surrogate import ArcTan, FastSigmoid

TRAININGS = ("layered", "unlayered")
LOSSES = ("rate", "membrane")
SCHEDULES = ("constant", "cosine")
ARCHS = ("fc", "conv")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training needs; times in seconds.

    The defaults train a small model on the built-in ``digits`` set in a minute. A
    configuration is validated on construction and never changes: derive another with
    :func:`dataclasses.replace`, which validates it again.

    ``surrogate_alpha`` is the arctan surrogate's ``alpha`` (2, as in snnTorch and
    SpikingJelly); ``surrogate_slope`` is the fast-sigmoid surrogate's slope ``k`` (25, as in
    snnTorch): see :mod:`asyncsnn.surrogate` and ``docs/semantics.md`` (training).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    dt: float | None = None  # None: the data set's default bin
    timesteps: int | None = None  # None: the data set's default
    limit_train: int | None = None  # use only the first N training samples
    limit_test: int | None = None
    val_fraction: float = 0.1  # held out of the training set to choose the best model
    first_saccade: bool = False  # N-MNIST: keep only the first saccade (first 100 ms)

    arch: str = "fc"
    hidden: tuple[int, ...] = (128, 128)
    tau_m: float = 1e-3
    threshold: float = 0.3

    training: str = "unlayered"
    scheduler: str = "momentum"
    group_size: int = 8
    lambda_ms: float = 1e-6

    epochs: int = 20
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-5
    lr_schedule: str = "cosine"
    loss: str = "rate"
    spike_reg: float = 0.0  # weight of the mean spikes per neuron and timestep in the loss
    input_dropout: float = 0.25
    refractory_dropout: float = 0.0
    max_queued_per_neuron: int = 4  # queue places per neuron where refractory dropout acts
    surrogate: str = "arctan"
    surrogate_alpha: float = 2.0  # arctan's alpha
    surrogate_slope: float = 25.0  # fast_sigmoid's slope k
    # unlayered training through the PyTorch engine (a user's policy): recompute each
    # timestep in the backward pass, so that memory does not grow with forward steps (the
    # compiled CPU path, which the built-in policies take, always works so)
    recompute: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _choice("training", self.training, TRAININGS)
        _choice("loss", self.loss, LOSSES)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("arch", self.arch, ARCHS)
        _choice("surrogate", self.surrogate, ("arctan", "fast_sigmoid"))
        get_scheduler(self.scheduler)  # raises for an unknown name
        if (
            isinstance(self.max_queued_per_neuron, bool)
            or not isinstance(self.max_queued_per_neuron, int)
            or self.max_queued_per_neuron < 1
        ):
            raise ValueError(
                f"max_queued_per_neuron must be an int >= 1, got {self.max_queued_per_neuron!r}"
            )
        if not isinstance(self.recompute, bool):
            raise ValueError(f"recompute must be true or false, got {self.recompute!r}")
        for name in ("tau_m", "threshold", "lr", "surrogate_alpha", "surrogate_slope"):
            _positive(name, getattr(self, name))
        if self.dt is not None:
            _positive("dt", self.dt)
        for name in ("epochs", "batch_size", "group_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("timesteps", "limit_train", "limit_test"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {v!r}")
        for name in ("input_dropout", "refractory_dropout", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("weight_decay", "spike_reg", "lambda_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden layer widths must be >= 1, got {self.hidden}")

    @property
    def execution(self) -> str:
        return "layered" if self.training == "layered" else "async"

    @property
    def readout(self) -> str:
        return "membrane" if self.loss == "membrane" else "spikes"

    def policy(self):
        if self.scheduler == "momentum":
            return Momentum(lambda_ms=self.lambda_ms)
        return get_scheduler(self.scheduler)

    def spike_fn(self):
        if self.surrogate == "arctan":
            return ArcTan(alpha=self.surrogate_alpha)
        return FastSigmoid(slope=self.surrogate_slope)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


#: The study's published N-MNIST settings (its Table 6); ``batch_size`` and ``epochs`` are
#: the study's, scale them to the machine.
PRESETS: dict[str, dict] = {
    "nmnist-study": {
        "dataset": "nmnist",
        "dt": 10e-3,
        "timesteps": 30,
        "hidden": (128, 128),
        "batch_size": 256,
        "epochs": 50,
        "lr": 5e-4,
        "threshold": 0.3,
        "weight_decay": 1e-5,
        "tau_m": 1e-3,
        "surrogate_alpha": 2.0,
        "input_dropout": 0.25,
        "group_size": 8,
        "refractory_dropout": 0.8,
        "lambda_ms": 1e-6,
        "scheduler": "momentum",
    },
}


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


# ------------------------------------------------------------------------------ model
def build_network(cfg: TrainConfig, input_shape: Sequence[int], n_classes: int) -> Network:
    """The network a configuration describes (weights from ``torch`` initialisation)."""
    input_shape = tuple(input_shape)
    layers: list[nn.Module] = []
    if cfg.arch == "conv":
        if len(input_shape) != 3:
            raise ValueError(f"arch='conv' needs (channels, height, width), got {input_shape}")
        c, h, w = input_shape
        for out_c in (32, 32, 64, 64):  # a VGG-7-like stack: 4 conv + 3 dense
            layers.append(nn.Conv2d(c, out_c, 3, padding=1))
            if h >= 4 and w >= 4:
                layers.append(nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            c = out_c
        layers.append(nn.Flatten())
        width = c * h * w
        hidden = cfg.hidden[:2] if cfg.hidden else (256, 128)
    else:
        if len(input_shape) > 1:
            layers.append(nn.Flatten())
        width = math.prod(input_shape)
        hidden = cfg.hidden
    for h in hidden:
        layers.append(nn.Linear(width, h))
        width = h
    layers.append(nn.Linear(width, n_classes))
    return Network.sequential(
        layers,
        input_shape=input_shape,
        tau_m=cfg.tau_m,
        threshold=cfg.threshold,
        readout=cfg.readout,
    )


def batch_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed derived from the run seed and integer keys (epoch, batch, ...)."""
    h = hash32(seed & 0xFFFFFFFF)
    for k in keys:
        h = hash32(h ^ (k & 0xFFFFFFFF) ^ 0x5BD1E995)
    return int(h)


def forward(
    net: Network,
    x: torch.Tensor,
    cfg: TrainConfig,
    *,
    training: bool,
    seed: int,
    execution: str | None = None,
    scheduler=None,
    group_size: int | None = None,
    hooks: Sequence = (),
    backend: str = "auto",
) -> RunResult:
    """Run a batch ``x`` of shape (batch, timesteps, *input) as the training does
    (``backend``: that of :func:`asyncsnn.run`).

    Frames whose shape differs from the network's input but holds as many values (a flat
    ``(512,)`` input for ``(2, 16, 16)`` frames, as NIR graphs often declare) are reshaped.
    """
    hooks = list(hooks)
    if tuple(x.shape[2:]) != net.input_shape and x[0, 0].numel() == net.n_input:
        x = x.reshape(*x.shape[:2], *net.input_shape)
    if training and cfg.input_dropout > 0:
        hooks.append(InputSpikeDropout(cfg.input_dropout))
    return run(
        net,
        x.transpose(0, 1),
        dt=float(cfg.dt),
        execution=execution or cfg.execution,
        scheduler=scheduler if scheduler is not None else cfg.policy(),
        group_size=group_size or cfg.group_size,
        seed=seed,
        hooks=hooks,
        refractory_dropout=cfg.refractory_dropout if training else 0.0,
        max_queued_per_neuron=cfg.max_queued_per_neuron,
        training=training,
        surrogate=cfg.spike_fn(),
        backend=backend,
        recompute=cfg.recompute,
    )


def loss_and_scores(result: RunResult, labels: torch.Tensor, cfg: TrainConfig):
    """Cross-entropy on output spike counts (rate) or on the mean membrane; plus the optional
    spike-count regulariser. Returns ``(loss, scores)``."""
    scores = result.membrane.mean(0) if cfg.loss == "membrane" else result.output_counts
    loss = F.cross_entropy(scores, labels)
    if cfg.spike_reg > 0:
        loss = loss + cfg.spike_reg * result.spikes.mean()
    return loss, scores


# ------------------------------------------------------------------------------ data
@dataclass
class Split:
    """A data split held in memory: ``x`` (samples, timesteps, *input), ``y`` (samples,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        idx = order if order is not None else torch.arange(len(self))
        for start in range(0, len(idx), batch_size):
            i = idx[start : start + batch_size]
            yield self.x[i], self.y[i]


def load_splits(cfg: TrainConfig, progress: bool = False) -> tuple[Split, Split, Split, DataFacts]:
    """Train, validation and test splits of the configured data set, and its facts."""
    from .data import load_dataset

    options = {}
    if cfg.dt is not None:
        options["dt"] = cfg.dt
    if cfg.timesteps is not None:
        options["n_timesteps"] = cfg.timesteps
    if cfg.first_saccade:
        if cfg.dataset != "nmnist":
            raise ValueError("first_saccade applies to the nmnist data set only")
        options["first_saccade"] = True
    train = load_dataset(cfg.dataset, root=cfg.data_dir, train=True, **options)
    test = load_dataset(cfg.dataset, root=cfg.data_dir, train=False, **options)
    tr = _materialize(train, cfg.limit_train, progress, "loading train")
    te = _materialize(test, cfg.limit_test, progress, "loading test")
    n_val = int(round(len(tr) * cfg.val_fraction))
    order = torch.randperm(len(tr), generator=torch.Generator().manual_seed(cfg.seed))
    val = Split(tr.x[order[:n_val]], tr.y[order[:n_val]])
    fit = Split(tr.x[order[n_val:]], tr.y[order[n_val:]])
    classes = list(getattr(train, "classes", range(int(tr.y.max()) + 1)))
    facts = DataFacts(
        input_shape=tuple(tr.x.shape[2:]),
        timesteps=int(tr.x.shape[1]),
        n_classes=int(getattr(train, "n_classes", len(classes))),
        dt=float(getattr(train, "dt", cfg.dt or 0.0)),
        classes=tuple(str(c) for c in classes),
        train_samples=len(fit),
        val_samples=len(val),
        test_samples=len(te),
    )
    return fit, val, te, facts


def _materialize(dataset, limit, progress, label) -> Split:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError(f"the data set {type(dataset).__name__} is empty")
    it = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=label, leave=False, disable=None)  # no bars when not a terminal
    xs, ys = [], []
    for i in it:
        frames, label_i = dataset[i]
        xs.append(torch.as_tensor(frames, dtype=torch.float32))
        ys.append(int(label_i))
    return Split(torch.stack(xs), torch.tensor(ys))


# ------------------------------------------------------------------------------ trainer
class Trainer:
    """Trains a model per :class:`TrainConfig` into ``run_dir``.

    ``splits``: the ``(fit, validation, test, facts)`` of :func:`load_splits`, to train on
    data already in memory (``facts`` a :class:`~asyncsnn.rundir.DataFacts` or its dict).

    >>> cfg = TrainConfig(epochs=1)                     # doctest: +SKIP
    >>> Trainer(cfg, "runs/first").fit()                # doctest: +SKIP
    """

    def __init__(
        self, cfg: TrainConfig, run_dir: str | Path, *, quiet: bool = False, splits=None
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.rundir = RunDir(run_dir)
        self.quiet = quiet
        self._splits = splits

    # -------------------------------------------------------------- public
    def fit(self, resume: bool = False) -> dict:
        """Train (or resume); returns the last epoch's metrics line.

        A configuration without ``dt`` takes the data set's: ``self.cfg`` becomes a copy with
        ``dt`` resolved, the configuration written to the run directory.
        """
        torch.manual_seed(self.cfg.seed)
        fit, val, test, facts = self._splits or load_splits(self.cfg, progress=not self.quiet)
        if not isinstance(facts, DataFacts):
            facts = DataFacts.from_dict(facts)
        if self.cfg.dt is None:
            self.cfg = dataclasses.replace(self.cfg, dt=facts.dt)
        cfg = self.cfg
        net = build_network(cfg, facts.input_shape, facts.n_classes)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = self._schedule(optimizer)
        epoch, start_batch, partial, best = 0, 0, None, -1.0
        last_path = self.rundir.checkpoint("last")
        if resume:
            if not last_path.is_file():
                raise CheckpointError(f"nothing to resume: no checkpoint at {last_path}")
            epoch, start_batch, partial, best = self._restore(last_path, net, optimizer, schedule)
        elif last_path.exists():
            raise FileExistsError(
                f"{self.run_dir} already holds a training; resume it or choose another folder"
            )
        record = RunRecord(config=cfg.to_dict(), data=facts)
        self.rundir.write_record(record)
        self.rundir.trim_metrics(epoch)
        line = {}
        state = {"net": net, "optimizer": optimizer, "schedule": schedule, "record": record}
        while epoch < cfg.epochs:
            try:
                line = self._epoch(state, fit, val, epoch, start_batch, partial, best)
            except KeyboardInterrupt:
                if not self.quiet:
                    print(f"\ninterrupted: state saved in {last_path}; resume to go on")
                raise
            schedule.step()
            if line["val_accuracy"] > best:
                best = line["val_accuracy"]
                self._save("best", state, epoch + 1, 0, None, best)
            epoch, start_batch, partial = epoch + 1, 0, None
            self._save("last", state, epoch, 0, None, best)
            self.rundir.append_metrics(line)
        self._plot()
        return line

    # -------------------------------------------------------------- internals
    def _schedule(self, optimizer):
        if self.cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.cfg.epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)

    def _epoch(
        self,
        state: dict,
        fit: Split,
        val: Split,
        epoch: int,
        start_batch: int,
        partial: dict | None,
        best: float,
    ) -> dict:
        cfg = self.cfg
        net, optimizer = state["net"], state["optimizer"]
        order = torch.randperm(
            len(fit), generator=torch.Generator().manual_seed(batch_seed(cfg.seed, epoch))
        )
        n_batches = math.ceil(len(fit) / cfg.batch_size)
        sums = dict(partial or {"loss": 0.0, "correct": 0.0, "seen": 0, "spikes": 0.0})
        bar = None
        if not self.quiet:
            from tqdm import tqdm

            bar = tqdm(
                total=n_batches,
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                leave=False,
                disable=None,  # no bars when not writing to a terminal
            )
        net.train()
        done = start_batch  # batches of this epoch whose update is applied
        try:
            for batch, (x, y) in enumerate(fit.batches(cfg.batch_size, order)):
                if batch < start_batch:
                    continue
                result = forward(
                    net, x, cfg, training=True, seed=batch_seed(cfg.seed, epoch, batch, 1)
                )
                loss, scores = loss_and_scores(result, y, cfg)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                from .metrics import predict

                sums["loss"] += float(loss.detach()) * len(y)
                sums["correct"] += float((predict(scores.detach()) == y).sum())
                sums["seen"] += len(y)
                sums["spikes"] += float(result.spikes.detach().sum())
                done = batch + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{sums['loss'] / sums['seen']:.3f}",
                        acc=f"{sums['correct'] / sums['seen']:.3f}",
                    )
        except KeyboardInterrupt:
            # the batch in flight is lost; the state after the last finished one is saved
            self._save("last", state, epoch, done, sums, best)
            raise
        finally:
            if bar is not None:
                bar.close()
        net.eval()
        v = self.evaluate_split(net, val)
        line = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_accuracy": sums["correct"] / max(sums["seen"], 1),
            "train_spikes_per_sample": sums["spikes"] / max(sums["seen"], 1),
            "val_accuracy": v["accuracy"],
            "val_spikes_per_sample": v["spikes_per_sample"],
        }
        if not self.quiet:
            print(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {line['train_loss']:.4f}  "
                f"train acc {line['train_accuracy']:.3f}  val acc {line['val_accuracy']:.3f}  "
                f"spikes/sample {line['val_spikes_per_sample']:.0f}"
            )
        return line

    def evaluate_split(self, net: Network, split: Split) -> dict:
        """Accuracy and spikes under the training's own execution (no dropout)."""
        from .metrics import predict

        if len(split) == 0:
            return {"accuracy": float("nan"), "spikes_per_sample": float("nan")}
        correct, spikes = 0.0, 0.0
        with torch.no_grad():
            for i, (x, y) in enumerate(split.batches(max(self.cfg.batch_size, 64))):
                r = forward(
                    net, x, self.cfg, training=False, seed=batch_seed(self.cfg.seed, 0xE7A1, i)
                )
                _, scores = loss_and_scores(r, y, self.cfg)
                correct += float((predict(scores) == y).sum())
                spikes += float(r.spikes.sum())
        return {"accuracy": correct / len(split), "spikes_per_sample": spikes / len(split)}

    def _save(self, name: str, state: dict, epoch: int, batch: int, partial, best: float):
        """Checkpoint ``name``: the position is (epoch, next batch) with the running sums of
        an unfinished epoch in ``partial``."""
        opt_t, opt_meta = optimizer_tensors(state["optimizer"])
        meta = checkpoint_meta(
            state["record"],
            epoch=epoch,
            batch=batch,
            partial=partial,
            best_val_accuracy=best,
            optimizer=opt_meta,
            schedule=state["schedule"].state_dict(),
        )
        tensors = {f"model.{k}": v for k, v in state["net"].state_dict().items()}
        tensors.update(opt_t)
        save_checkpoint(self.rundir.checkpoint(name), tensors, meta)

    def _restore(self, path, net, optimizer, schedule):
        tensors, meta = load_checkpoint(path)
        load_model_state(net, tensors)
        restore_optimizer(optimizer, tensors, meta["optimizer"])
        if meta.get("schedule"):
            schedule.load_state_dict(meta["schedule"])
        return meta["epoch"], meta["batch"], meta.get("partial"), meta["best_val_accuracy"]

    def _plot(self) -> None:
        lines = self.rundir.read_metrics()
        if not lines:
            return
        from .plots import training_curves

        training_curves(lines, self.rundir.curves_path)


def load_model_state(net: Network, tensors: dict[str, torch.Tensor]) -> None:
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"the checkpoint does not fit the network: missing {missing}, unexpected {unexpected}"
        )


def load_run(run_dir: str | Path, which: str = "best") -> tuple[Network, TrainConfig, DataFacts]:
    """The trained network of a run directory, its configuration and data facts.

    A run made by ``asyncsnn import`` holds its network as ``model.nir`` instead of a
    checkpoint.
    """
    run = RunDir(run_dir)
    if run.is_imported():
        from .interchange import from_nir

        record = run.read_record()
        cfg = TrainConfig.from_dict(record.config)
        if record.nir is None:
            raise ValueError(f"{run.config_path} does not say how {run.nir_path} was imported")
        net = from_nir(run.nir_path, dt=cfg.dt, discretization=record.nir.discretization)
        net.eval()
        return net, cfg, record.data
    tensors, meta = load_checkpoint(run.checkpoint(which))
    if "data" not in meta:  # a checkpoint that leaves the data facts to config.json
        meta = {**meta, "data": run.read_record().data.to_dict()}
    record = RunRecord.from_dict(meta)
    cfg = TrainConfig.from_dict(record.config)
    facts = record.data
    if cfg.dt is None:
        cfg = dataclasses.replace(cfg, dt=facts.dt)
    net = build_network(cfg, facts.input_shape, facts.n_classes)
    load_model_state(net, tensors)
    net.eval()
    return net, cfg, facts


def unfinished(run_dir: str | Path) -> str | None:
    """Why a run directory's training is not finished (it is still running, or stopped before
    its last epoch), or ``None``: its best checkpoint may still change."""
    path = RunDir(run_dir).checkpoint_json("last")
    if not path.is_file():
        return None  # an imported model, or no training at all
    meta = json.loads(path.read_text())
    epoch, epochs = meta.get("epoch"), meta.get("config", {}).get("epochs")
    if epoch is None or epochs is None or (epoch >= epochs and not meta.get("partial")):
        return None
    return f"it has trained {epoch} of {epochs} epochs (still training, or stopped)"
