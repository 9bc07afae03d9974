"""Training: layered (surrogate BPTT) and unlayered backprop through asynchronous execution.

:class:`TrainConfig` holds every setting (validated on construction); :class:`Trainer` runs
the training into a run directory (its layout: :mod:`asyncsnn.rundir`)::

    RUN/config.json             the resolved configuration and the data facts
    RUN/metrics.jsonl           one line per epoch (train loss and accuracy, validation)
    RUN/checkpoints/last.*      model + optimizer + position, after every epoch (and on Ctrl-C)
    RUN/checkpoints/best.*      the model of the best validation accuracy
    RUN/training.png            loss and accuracy curves
    RUN/init.nir                a fine-tuning's NIR graph (``init``): the network's structure

A training starts from ``torch``'s initialisation or, with ``init``, from a trained model: a
run directory's checkpoint (the weights) or a NIR file (the whole network); see
:class:`InitSource`.

Training resumes exactly from ``last`` (model, optimizer, learning-rate schedule, epoch and
batch): the data order and every random decision are functions of the seed, the epoch and
the batch index, never of hidden generator state. Ctrl-C is taken at a safe point
(:mod:`asyncsnn.interrupts`), one process writes a run directory at a time
(:meth:`asyncsnn.rundir.RunDir.lock`), and a resume may change only the settings of
:data:`RESUME_MAY_CHANGE`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)
from .dynamics import RESETS
from .execution import RunResult, run
from .hooks import InputSpikeDropout
from .interchange import DISCRETIZATIONS
from .interrupts import Interrupts
from .network import Network, upgrade_state
from .options import SURROGATE_CHECKS
from .rng import hash32, sample_seeds
from .rundir import CHECKPOINT_NAMES, DataFacts, RunDir, RunRecord, _is_int, checkpoint_meta
from .scheduling import Momentum, get_scheduler
from .surrogate import ArcTan, FastSigmoid

TRAININGS = ("layered", "unlayered")
LOSSES = ("rate", "membrane")
SCHEDULES = ("constant", "cosine")
ARCHS = ("fc", "conv", "recurrent")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training needs; times in seconds.

    The defaults train a small model on the built-in ``digits`` set in a minute. A
    configuration is validated on construction and never changes: derive another with
    :func:`dataclasses.replace`, which validates it again.

    ``surrogate_alpha`` is the arctan surrogate's ``alpha`` (2, as in snnTorch and
    SpikingJelly); ``surrogate_slope`` is the fast-sigmoid surrogate's slope ``k`` (25, as in
    snnTorch): see :mod:`asyncsnn.surrogate` and ``docs/semantics.md`` (training).

    ``init`` fine-tunes a trained model (:class:`InitSource`): ``"RUN"`` (the run directory's
    best checkpoint) or ``"RUN:last"`` gives the weights of a network built as usual (``arch``,
    ``hidden`` and the neurons, ``tau_m``, ``threshold``, ``tau_syn`` and ``reset``, as
    configured; the weights must fit), ``"F.nir"`` gives the network itself, the graph's
    structure, weights and neurons read with the training's ``dt`` and
    ``init_discretization`` (``arch``, ``hidden`` and the neurons do not apply, except
    ``reset="subtract"``, which states the reset NIR cannot say for every spiking
    population; the default leaves it to the graph, :func:`~asyncsnn.from_nir`). The
    optimizer and the epochs start afresh. Only the text is checked here; the files are
    checked when a training starts, and a resume continues its checkpoint without reading
    them.
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
    # the neuron variants (docs/semantics.md, section 2): a synaptic current (current-based
    # LIF, None: none) and the reset ("zero" or "subtract"), in every population
    tau_syn: float | None = None
    reset: str = "zero"

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
    # weight of the running decision's loss: the mean over timesteps of the cross-entropy on
    # the output counts so far (spiking readout only; see decision_loss)
    decision_weight: float = 0.0
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
    # unlayered training: surrogate gradients also through the neurons that did not fire
    # (docs/semantics.md, section 8.7)
    silent_gradients: bool = False
    # unlayered training: which of a neuron's repeated threshold checks in a timestep pass
    # their surrogate gradient, "every", "last" or "firing" (docs/semantics.md, section 8.8)
    surrogate_checks: str = "every"
    # unlayered training under a mix of schedules: each batch draws its policy and F from
    # these (empty: always ``scheduler`` and ``group_size``); validation uses those two
    mix_schedulers: tuple[str, ...] = ()
    mix_group_sizes: tuple[int, ...] = ()
    seed: int = 0
    # where the training runs: "cpu", "cuda" or "cuda:N" (under torchrun each process takes
    # cuda:LOCAL_RANK); unlayered training on CUDA runs the Triton kernel where it applies,
    # else the PyTorch engine, recomputing each timestep in the backward pass
    device: str = "cpu"
    # fine-tuning: start from a run directory ("RUN", "RUN:last") or a NIR file ("F.nir")
    init: str | None = None
    init_discretization: str = "exact"  # how a NIR init's time constants are read (from_nir)

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, (list, tuple)) or not all(_is_int(h) for h in self.hidden):
            raise ValueError(f"hidden must be a list of layer widths (ints), got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("mix_schedulers", "mix_group_sizes"):
            v = getattr(self, name)
            if isinstance(v, str) or not isinstance(v, (list, tuple)):
                raise ValueError(f"{name} must be a list, got {v!r}")
            object.__setattr__(self, name, tuple(v))
        for name in self.mix_schedulers:
            if not isinstance(name, str):
                raise ValueError(f"mix_schedulers must name policies, got {name!r}")
            get_scheduler(name)  # raises for an unknown name
        if not all(_is_int(f) and f >= 1 for f in self.mix_group_sizes):
            raise ValueError(f"mix_group_sizes must be ints >= 1, got {self.mix_group_sizes!r}")
        _choice("training", self.training, TRAININGS)
        _choice("loss", self.loss, LOSSES)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("arch", self.arch, ARCHS)
        _choice("surrogate", self.surrogate, ("arctan", "fast_sigmoid"))
        _choice("surrogate_checks", self.surrogate_checks, SURROGATE_CHECKS)
        get_scheduler(self.scheduler)  # raises for an unknown name
        if (
            isinstance(self.max_queued_per_neuron, bool)
            or not isinstance(self.max_queued_per_neuron, int)
            or self.max_queued_per_neuron < 1
        ):
            raise ValueError(
                f"max_queued_per_neuron must be an int >= 1, got {self.max_queued_per_neuron!r}"
            )
        check_device(self.device)
        for name in ("recompute", "silent_gradients", "first_saccade"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("tau_m", "threshold", "lr", "surrogate_alpha", "surrogate_slope"):
            _positive(name, getattr(self, name))
        if self.dt is not None:
            _positive("dt", self.dt)
        if self.tau_syn is not None:
            _positive("tau_syn", self.tau_syn)
        _choice("reset", self.reset, RESETS)
        for name in ("epochs", "batch_size", "group_size"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        for name in ("timesteps", "limit_train", "limit_test"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise ValueError(f"{name} must be an int >= 1 or None, got {v!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r}")
        for name in ("dataset", "data_dir"):
            v = getattr(self, name)
            if not (isinstance(v, str) or (v is None and name == "data_dir")):
                raise ValueError(f"{name} must be a string, got {v!r}")
        for name in ("input_dropout", "refractory_dropout", "val_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {v!r}")
        for name in ("weight_decay", "spike_reg", "lambda_ms", "decision_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.decision_weight > 0 and self.loss == "membrane":
            raise ValueError(
                "decision_weight needs a spiking readout (loss 'rate'): the membrane readout "
                "has no output counts to decide on"
            )
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden layer widths must be >= 1, got {self.hidden}")
        if self.init is not None:
            InitSource.parse(self.init)  # its text; the files are checked when training starts
        _choice("init_discretization", self.init_discretization, DISCRETIZATIONS)

    @property
    def init_source(self) -> InitSource | None:
        """Where the training starts from (``init``), or ``None``."""
        return None if self.init is None else InitSource.parse(self.init)

    @property
    def execution(self) -> str:
        return "layered" if self.training == "layered" else "async"

    @property
    def readout(self) -> str:
        return "membrane" if self.loss == "membrane" else "spikes"

    def policy(self, name: str | None = None):
        """The policy ``name`` (default: ``scheduler``); momentum with ``lambda_ms``."""
        name = self.scheduler if name is None else name
        if name == "momentum":
            return Momentum(lambda_ms=self.lambda_ms)
        return get_scheduler(name)

    def schedule_for(self, epoch: int, batch: int) -> tuple[object, int]:
        """The policy and ``F`` of training batch ``(epoch, batch)``: drawn from
        ``mix_schedulers`` and ``mix_group_sizes`` where given (a pure function of the seed
        and the position, so that a resumed training draws the same), else ``scheduler`` and
        ``group_size``."""
        names = self.mix_schedulers or (self.scheduler,)
        sizes = self.mix_group_sizes or (self.group_size,)
        h = batch_seed(self.seed, epoch, batch, 2)
        return self.policy(names[h % len(names)]), int(sizes[(h // len(names)) % len(sizes)])

    def spike_fn(self):
        if self.surrogate == "arctan":
            return ArcTan(alpha=self.surrogate_alpha)
        return FastSigmoid(slope=self.surrogate_slope)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("hidden", "mix_schedulers", "mix_group_sizes"):
            d[name] = list(d[name])  # JSON has lists; from_dict makes them tuples again
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
    """The network a configuration describes (weights from ``torch`` initialisation):
    ``fc``, dense layers of ``hidden`` widths; ``conv``, a VGG-7-like stack; ``recurrent``, the
    dense layers with a recurrent projection in every hidden population (for temporal data
    such as spoken digits)."""
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
    net = Network.sequential(
        layers,
        input_shape=input_shape,
        tau_m=cfg.tau_m,
        threshold=cfg.threshold,
        tau_syn=cfg.tau_syn,
        reset=cfg.reset,
        readout=cfg.readout,
    )
    if cfg.arch == "recurrent":  # each hidden population also hears its own spikes
        for pop in net.populations[:-1]:
            net.connect(pop.name, pop.name, [nn.Linear(pop.size, pop.size, bias=False)])
    return net


@dataclass(frozen=True)
class InitSource:
    """Where a fine-tuning starts (:attr:`TrainConfig.init`): checkpoint ``which`` of the run
    directory ``path``, or the NIR file ``path`` (``which`` is ``None``).

    Which of the two is read from the text alone, so that a run's record says it whatever
    becomes of the file later: a name ending in ``.nir`` is a NIR file; anything else is a run
    directory, ``RUN:best`` or ``RUN:last`` picking its checkpoint (``best`` by default).

    >>> InitSource.parse("runs/a:last").which, InitSource.parse("m.nir").is_nir
    ('last', True)
    """

    spec: str
    path: Path
    which: str | None

    @classmethod
    def parse(cls, spec: str) -> InitSource:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(
                f"init must name a run directory (RUN, RUN:last) or a .nir file, got {spec!r}"
            )
        path, which = spec, "best"
        for name in CHECKPOINT_NAMES:
            if spec.endswith(f":{name}"):
                path, which = spec[: -len(name) - 1], name
        if path.lower().endswith(".nir"):
            if path != spec:
                raise ValueError(
                    f"init {spec!r}: ':{which}' picks a run directory's checkpoint; a NIR file "
                    f"holds one model: use {path!r}"
                )
            which = None
        return cls(spec, Path(path), which)

    @property
    def is_nir(self) -> bool:
        return self.which is None

    def check(self) -> None:
        """Raise, naming the problem, where the files are not what :attr:`spec` names: no
        such path, a run directory without the checkpoint, a file that is not NIR."""
        what = "NIR file" if self.is_nir else "run directory"
        if not self.path.exists():
            raise FileNotFoundError(f"init {self.spec!r}: no {what} at {self.path}")
        if self.is_nir:
            if not self.path.is_file():
                raise ValueError(f"init {self.spec!r}: {self.path} is a folder, not a NIR file")
            from .interchange import _nir

            try:
                nir = _nir()
            except ImportError as e:  # it says what to install
                raise ValueError(f"init {self.spec!r}: {e}") from None
            try:
                nir.read(str(self.path), type_check=False)
            except Exception as e:  # h5py's and nir's errors: the file is not a NIR graph
                raise ValueError(
                    f"init {self.spec!r}: {self.path} cannot be read as a NIR graph "
                    f"({type(e).__name__}: {e})"
                ) from None
            return
        if not self.path.is_dir():
            raise ValueError(
                f"init {self.spec!r}: {self.path} is a file, not a run directory (the name of a "
                "NIR file ends in .nir)"
            )
        run = RunDir(self.path)
        if not run.checkpoint(self.which).is_file():
            if run.is_imported():
                why = f"it holds an imported model: pass {run.nir_path} as init"
            elif run.holds_run():
                why = "its training has not finished an epoch"
            else:
                why = "it is not a run directory"
            raise CheckpointError(
                f"init {self.spec!r}: no checkpoint {run.checkpoint(self.which)} ({why})"
            )


def network_for(cfg: TrainConfig, facts: DataFacts, run_dir: str | Path | None = None) -> Network:
    """The network a training of ``cfg`` on data of ``facts`` trains (``cfg.dt`` resolved):
    :func:`build_network`'s or, where ``init`` is a NIR file, that graph's, read from the file
    or, with ``run_dir``, from the run directory's copy of it (``RUN/init.nir``). The graph
    must take the data's input (as many values) and have one readout neuron per class, spiking
    for ``loss="rate"`` and not for ``loss="membrane"``."""
    source = cfg.init_source
    if source is None or not source.is_nir:
        return build_network(cfg, facts.input_shape, facts.n_classes)
    from .interchange import from_nir

    path = source.path if run_dir is None else RunDir(run_dir).init_nir_path
    how = f"init {cfg.init!r} (read with dt {cfg.dt:g} s, discretization {cfg.init_discretization})"
    try:
        with warnings.catch_warnings():
            if run_dir is not None:  # warned about (another dt) when the training started
                warnings.simplefilter("ignore")
            stated = "subtract" if cfg.reset == "subtract" else None  # else the graph's
            net = from_nir(path, dt=cfg.dt, discretization=cfg.init_discretization, reset=stated)
    except ValueError as e:  # NIRConversionError names the node
        raise ValueError(f"{how}: {e}") from None
    if net.n_input != math.prod(facts.input_shape):
        raise ValueError(
            f"{how}: the graph takes inputs of shape {net.input_shape} ({net.n_input} values), "
            f"the data set {cfg.dataset!r} gives {facts.input_shape} "
            f"({math.prod(facts.input_shape)} values)"
        )
    out = net.output
    if out.size != facts.n_classes:
        raise ValueError(
            f"{how}: the graph's readout {out.name!r} has {out.size} neurons, the data set "
            f"{cfg.dataset!r} has {facts.n_classes} classes"
        )
    if out.spiking != (cfg.readout == "spikes"):
        kind, loss = ("spiking", "rate") if out.spiking else ("non-spiking", "membrane")
        raise ValueError(
            f"{how}: the graph's readout {out.name!r} is {kind}: train it with loss={loss!r} "
            f"(not {cfg.loss!r})"
        )
    return net


def _start_from_run(net: Network, cfg: TrainConfig, facts: DataFacts) -> None:
    """Load the weights and biases of the init run's checkpoint into ``net``; its neurons
    (``tau_m``, threshold, ``tau_syn``) stay the configuration's (a warning where the run's
    differ)."""
    source = cfg.init_source
    path = RunDir(source.path).checkpoint(source.which)
    tensors, meta = load_checkpoint(path)
    record = _recorded(meta, path)
    theirs = record.config.get("init")
    if isinstance(theirs, str) and theirs.strip() and InitSource.parse(theirs).is_nir:
        raise ValueError(
            f"init {cfg.init!r}: that run's network is the NIR graph it was fine-tuned from "
            f"({theirs}), not one a configuration builds: export it (asyncsnn export "
            f"{source.path} --out F.nir) and pass F.nir as init"
        )
    neurons = {
        "model.tau_m": net.tau_m,
        "model.threshold": net.threshold,
        "model.tau_syn": net.tau_syn,
    }
    try:
        load_model_state(net, {**tensors, **neurons})
    except CheckpointError as e:
        ours = cfg.to_dict()
        differ = [
            f"{k} {record.config.get(k)!r} there, {ours[k]!r} here"
            for k in ("arch", "hidden")
            if record.config.get(k) != ours[k]
        ]
        for k in ("input_shape", "n_classes"):
            if getattr(record.data, k) != getattr(facts, k):
                differ.append(f"{k} {getattr(record.data, k)!r} there, {getattr(facts, k)!r} here")
        hint = f" (the init run's settings and data differ: {'; '.join(differ)})" if differ else ""
        raise CheckpointError(f"init {cfg.init!r}: {path}: {e}{hint}") from None
    if any(
        k not in tensors or tensors[k].shape != v.shape or not torch.equal(tensors[k], v)
        for k, v in neurons.items()
    ):
        warnings.warn(
            f"init {cfg.init!r}: that run's neurons have other tau_m, threshold or tau_syn "
            f"values than this configuration (tau_m {cfg.tau_m:g}, threshold "
            f"{cfg.threshold:g}, tau_syn {cfg.tau_syn}); the fine-tuning uses the "
            "configuration's (set them to the run's to keep its neurons)",
            stacklevel=4,  # the caller of Trainer.fit
        )


def check_device(name: str) -> torch.device:
    """The device a training or evaluation names (``cpu``, ``cuda``, ``cuda:N``); a
    ``ValueError`` for anything else. Whether CUDA is present is checked when the device is
    used (:func:`use_device`), so a configuration written on a GPU machine still reads on a
    CPU one."""
    if not isinstance(name, str):
        raise ValueError(f"device must be a string (cpu, cuda or cuda:N), got {name!r}")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {name!r}")
    return device


def use_device(name: str | torch.device) -> torch.device:
    """:func:`check_device`, and for CUDA that the device exists: a ``ValueError`` saying what
    this machine has otherwise."""
    device = check_device(str(name))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(name)!r}: this machine has no CUDA device (or this torch build "
                f"{torch.__version__} has no CUDA); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


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
    seed: int | torch.Tensor,
    execution: str | None = None,
    scheduler=None,
    group_size: int | None = None,
    hooks: Sequence = (),
    backend: str = "auto",
) -> RunResult:
    """Run a batch ``x`` of shape (batch, timesteps, *input) as the training does
    (``backend``: that of :func:`asyncsnn.run`; ``seed``: an int or per-sample seeds,
    :func:`asyncsnn.rng.sample_seeds`). On CUDA, where the Triton kernel does not apply, the
    PyTorch engine recomputes each timestep in the backward pass (the Triton kernel replays
    one timestep at a time by itself), so memory does not grow with forward steps.

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
        x.transpose(0, 1).contiguous(),  # (timesteps, batch, ...): each timestep one block
        dt=float(cfg.dt),
        execution=execution or cfg.execution,
        scheduler=scheduler if scheduler is not None else cfg.policy(),
        group_size=cfg.group_size if group_size is None else group_size,
        seed=seed,
        hooks=hooks,
        refractory_dropout=cfg.refractory_dropout if training else 0.0,
        max_queued_per_neuron=cfg.max_queued_per_neuron,
        training=training,
        surrogate=cfg.spike_fn(),
        backend=backend,
        recompute=cfg.recompute or x.device.type == "cuda",
        silent_gradients=cfg.silent_gradients,
        surrogate_checks=cfg.surrogate_checks,
    )


def loss_and_scores(result: RunResult, labels: torch.Tensor, cfg: TrainConfig):
    """Cross-entropy on output spike counts (rate) or on the mean membrane; plus the optional
    spike-count regulariser and, weighted by ``decision_weight``, the running decision's loss
    (:func:`decision_loss`). Returns ``(loss, scores)``."""
    scores = result.membrane.mean(0) if cfg.loss == "membrane" else result.output_counts
    loss = F.cross_entropy(scores, labels)
    if cfg.spike_reg > 0:
        loss = loss + cfg.spike_reg * result.spikes.mean()
    if cfg.decision_weight > 0:
        loss = loss + cfg.decision_weight * decision_loss(result, labels)
    return loss, scores


def decision_loss(result: RunResult, labels: torch.Tensor) -> torch.Tensor:
    """The running decision's loss: the mean over timesteps ``t`` of the cross-entropy (mean
    over the batch) on the output spike counts summed over timesteps ``0..t``, the counts the
    prediction would be read from if the sample stopped after ``t``. A rate loss alone
    rewards only the total counts; this one rewards a correct decision early, and weighs each
    timestep's decision alike. Needs a spiking readout."""
    out = result.network.output
    if not out.spiking:
        raise ValueError("the running decision's loss needs a spiking readout")
    lo = out.offset - result.network.n_input
    so_far = result.spikes[..., lo : lo + out.size].cumsum(0)  # (timesteps, batch, outputs)
    T = so_far.shape[0]
    return F.cross_entropy(so_far.flatten(0, 1), labels.repeat(T))


# ------------------------------------------------------------------------------ data
@dataclass
class Split:
    """A data split held in memory: ``x`` (samples, timesteps, *input), ``y`` (samples,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, order: torch.Tensor | None = None):
        """``(x, y)`` of ``batch_size`` samples at a time, in ``order`` (default: in order,
        as views of the split)."""
        if order is None:
            for start in range(0, len(self), batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            return
        for start in range(0, len(order), batch_size):
            i = order[start : start + batch_size]
            yield self.x[i], self.y[i]


def _dataset_options(cfg: TrainConfig) -> dict:
    options = {}
    if cfg.dt is not None:
        options["dt"] = cfg.dt
    if cfg.timesteps is not None:
        options["n_timesteps"] = cfg.timesteps
    if cfg.first_saccade:
        from .data import get_dataset_class

        if cfg.dataset == "tonic:NMNIST":  # tonic's own option, the same cut at 100 ms
            options["first_saccade_only"] = True
        elif cfg.dataset.startswith("tonic:") or get_dataset_class(cfg.dataset).name != "nmnist":
            raise ValueError("first_saccade applies to the nmnist data set only")
        else:  # "N-MNIST" names it too
            options["first_saccade"] = True
    return options


def load_splits(cfg: TrainConfig, progress: bool = False) -> tuple[Split, Split, Split, DataFacts]:
    """Train, validation and test splits of the configured data set, and its facts. A
    ``limit_train`` or ``limit_test`` takes a stratified subset (:func:`subset`)."""
    from .data import load_dataset

    options = _dataset_options(cfg)
    train = load_dataset(cfg.dataset, root=cfg.data_dir, train=True, **options)
    test = load_dataset(cfg.dataset, root=cfg.data_dir, train=False, **options)
    tr = _materialize(train, cfg.limit_train, progress, "loading train", cfg.seed)
    te = _materialize(test, cfg.limit_test, progress, "loading test", cfg.seed)
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


def load_test_split(cfg: TrainConfig, progress: bool = False) -> Split:
    """The test split of the configured data set alone (evaluation needs no training data):
    the same samples as :func:`load_splits` gives."""
    from .data import load_dataset

    test = load_dataset(cfg.dataset, root=cfg.data_dir, train=False, **_dataset_options(cfg))
    return _materialize(test, cfg.limit_test, progress, "loading test", cfg.seed)


def load_spike_file(path, cfg: TrainConfig, facts: DataFacts, progress: bool = False) -> Split:
    """The recordings of an HDF5 file in SHD's schema (:meth:`asyncsnn.data.SHD.from_file`)
    binned as the model's data (its ``dt`` and timesteps), to evaluate a model on spikes
    made otherwise (another encoder, other recordings). Its channels and classes must fit
    the model's."""
    from .data import SHD

    data = SHD.from_file(path, train=False, dt=cfg.dt, n_timesteps=facts.timesteps)
    if data.n_inputs != math.prod(facts.input_shape):
        raise ValueError(
            f"{path} has {data.n_inputs} channels, the model takes {tuple(facts.input_shape)}"
        )
    top = max(data.targets, default=0)
    if top >= facts.n_classes:
        raise ValueError(f"{path} has labels up to {top}; the model has {facts.n_classes} classes")
    return _materialize(data, cfg.limit_test, progress, "loading spikes", cfg.seed)


def subset(labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """Indices of ``limit`` of the samples with ``labels``, stratified: every class in
    proportion to its size (largest remainders first), each class's samples drawn in a
    shuffled order of ``seed``; in ascending order. Data sets are often stored by class, so
    the first ``limit`` samples would hold a few classes only."""
    n = len(labels)
    if limit >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * limit / n
    take = exact.floor().long()
    short = limit - int(take.sum())
    if short:
        order = torch.argsort(exact - take.double(), descending=True, stable=True)
        take[order[:short]] += 1
    chosen = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.sort(torch.cat(chosen)).values


def _materialize(dataset, limit, progress, label, seed: int = 0) -> Split:
    """The samples of ``dataset`` in memory: all, or a stratified ``limit`` of them
    (:func:`subset`, by the labels the data set lists without loading its samples)."""
    if len(dataset) == 0:
        raise ValueError(f"the data set {type(dataset).__name__} is empty")
    indices = list(range(len(dataset)))
    if limit is not None and limit < len(dataset):
        labels = _labels_of(dataset)
        indices = indices[:limit] if labels is None else subset(labels, limit, seed).tolist()
    it = indices
    if progress:
        from tqdm import tqdm

        it = tqdm(indices, desc=label, leave=False, disable=None)  # no bars off a terminal
    xs, ys = [], []
    for i in it:
        frames, label_i = dataset[i]
        xs.append(torch.as_tensor(frames, dtype=torch.float32))
        ys.append(int(label_i))
    return Split(torch.stack(xs), torch.tensor(ys))


def _labels_of(dataset) -> torch.Tensor | None:
    """Every sample's label without loading the samples, where the data set lists them."""
    labels = getattr(dataset, "targets", None)
    if labels is None or len(labels) != len(dataset):
        return None
    return torch.as_tensor([int(v) for v in labels])


# ------------------------------------------------------------------------------ trainer
class ImportedRunError(FileExistsError):
    """A training (or a resume) into the run directory of an imported model, which holds a
    NIR graph and no training to continue."""


def _refuse_imported(run: RunDir) -> None:
    """Refuse to train into (or resume) an imported model's run directory: it holds a NIR
    graph, no training, and a training would overwrite the record of how it was imported. The
    message says how to fine-tune it instead (``--init RUN/model.nir`` into another folder)."""
    if not run.is_imported():
        return
    how = ""
    try:
        record = run.read_record()
        if record.nir is not None and record.nir.discretization != "exact":
            how += f" --init-discretization {record.nir.discretization}"
        dataset, dt = record.config.get("dataset"), record.config.get("dt")
        how += f" --dataset {dataset}" if dataset not in (None, "digits") else ""
        how += f" --dt {dt:g}" if isinstance(dt, (int, float)) else ""
    except (OSError, ValueError, TypeError):
        pass  # the advice without the recorded settings
    raise ImportedRunError(
        f"{run.path} holds an imported model ({run.nir_path.name}), not a training: there is "
        "nothing to resume or train in it; to train it, fine-tune it into another folder: "
        f"asyncsnn train --init {run.nir_path}{how} --out NEW"
    )


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
        #: after :meth:`fit`: whether the run had trained all its epochs already (a resume of
        #: a finished training), so that nothing was trained
        self.finished_before = False

    # -------------------------------------------------------------- public
    def fit(self, resume: bool = False) -> dict:
        """Train (or resume); returns the last epoch's metrics line.

        The run directory is locked for the whole training (one writer per run; see
        :meth:`RunDir.lock`). A configuration without ``dt`` takes the data set's:
        ``self.cfg`` becomes a copy with ``dt`` resolved, the configuration written to the run
        directory. On resume the configuration is the checkpoint's; only the settings of
        :data:`RESUME_MAY_CHANGE` may differ (see :func:`resumed_config`).

        Ctrl-C stops at the next safe point (after the batch in flight) with the state saved
        in ``last``; a resume then goes on exactly where it stopped (:mod:`asyncsnn.interrupts`).

        A configuration with ``init`` starts from that model (its files checked first) when the
        training starts afresh; a resume continues its checkpoint, whose weights win, and a NIR
        init's network is then rebuilt from the run directory's copy (``RUN/init.nir``).
        """
        _refuse_imported(self.rundir)  # before anything is written, the lock file included
        self.world, self.device = distributed.setup(use_device(self.cfg.device))
        if self.world.distributed and self.cfg.batch_size < self.world.size:
            raise ValueError(
                f"batch_size {self.cfg.batch_size} is the global batch: it must be at least "
                f"the {self.world.size} processes"
            )
        # one writer: the process of rank 0 holds the lock and writes; the others read
        with self.rundir.lock() if self.world.main else contextlib.nullcontext():
            if self.world.main:
                self.rundir.remove_leftovers()
            distributed.barrier()  # every process has read the folder before rank 0 writes
            return self._fit(resume)

    # -------------------------------------------------------------- internals
    def _fit(self, resume: bool) -> dict:
        last_path = self.rundir.checkpoint("last")
        meta = None
        if resume and last_path.is_file():
            tensors, meta = load_checkpoint(last_path)
            recorded = _recorded(meta, last_path)
            self.cfg = resumed_config(TrainConfig.from_dict(recorded.config), self.cfg, meta)
        elif resume:  # stopped before its first checkpoint: it starts again, as recorded
            if not self.rundir.holds_run():
                raise CheckpointError(f"nothing to resume: no checkpoint at {last_path}")
            recorded = self.rundir.read_record()
            start = {"epoch": 0, "batch": 0}
            self.cfg = resumed_config(TrainConfig.from_dict(recorded.config), self.cfg, start)
        elif self.rundir.written():
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({', '.join(self.rundir.written())}); "
                "resume it (--resume) or choose another folder"
            )
        fresh = meta is None  # no checkpoint to continue: the init (if any) applies
        if fresh and self.cfg.init is not None:
            self.cfg.init_source.check()  # before the data are loaded
        torch.manual_seed(self.cfg.seed)
        fit, val, test, facts = self._splits or load_splits(self.cfg, progress=not self.quiet)
        if not isinstance(facts, DataFacts):
            facts = DataFacts.from_dict(facts)
        distributed.barrier()  # every process has checked the folder before rank 0 writes
        if len(val) == 0:
            raise ValueError(
                f"no validation samples ({len(fit)} training samples, val_fraction "
                f"{self.cfg.val_fraction}): the best model is chosen on validation data; "
                "raise val_fraction or limit_train"
            )
        if self.cfg.dt is None:
            self.cfg = dataclasses.replace(self.cfg, dt=facts.dt)
        cfg = self.cfg
        net = network_for(cfg, facts, None if fresh else self.run_dir)
        init = cfg.init_source if fresh else None
        if init is not None and not init.is_nir:
            _start_from_run(net, cfg, facts)
        net.to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = self._schedule(optimizer)
        epoch, start_batch, partial, best = 0, 0, None, -1.0
        if meta is not None:
            if recorded.data != facts:
                raise ValueError(
                    f"the data differ from those {last_path} was trained on: recorded "
                    f"{recorded.data.to_dict()}, now {facts.to_dict()}"
                )
            epoch, start_batch, partial, best = self._restore(tensors, meta, net, optimizer)
            self._restore_schedule(schedule, meta, epoch)
        main = self.world.main
        if init is not None and init.is_nir and main:
            self.rundir.write_init_nir(init.path)  # the network, for a resume and load_run
        record = RunRecord(config=cfg.to_dict(), data=facts)
        if main:
            self.rundir.write_record(record)
            self.rundir.trim_metrics(epoch)
        line = {}
        if epoch >= cfg.epochs:  # a resume of a finished training: its last epoch's line
            self.finished_before = True
            line = (self.rundir.read_metrics() or [{}])[-1]
        step = _Step(net, cfg)
        if self.world.distributed:  # averages the gradients over the processes
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(step, device_ids=ids)
        state = {
            "net": net,
            "optimizer": optimizer,
            "schedule": schedule,
            "record": record,
            "step": step,
        }
        stops = Interrupts(notice=not self.quiet)
        with stops.deferred():
            while epoch < cfg.epochs:
                position = (epoch, start_batch, partial, best)
                line = self._epoch(state, fit, val, position, stops)
                with stops.critical():  # the epoch's line first: a resume writes it again
                    with warnings.catch_warnings():  # a resume may start at validation
                        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler")
                        schedule.step()
                    if main:
                        self.rundir.append_metrics(line)
                    if line["val_accuracy"] > best:
                        best = line["val_accuracy"]
                        self._save("best", state, epoch + 1, 0, None, best)
                    epoch, start_batch, partial = epoch + 1, 0, None
                    self._save("last", state, epoch, 0, None, best)
        if main:
            self._plot()
        distributed.barrier()  # rank 0 has written everything before any process returns
        return line

    def _schedule(self, optimizer):
        if self.cfg.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.cfg.epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)

    def _restore_schedule(self, schedule, meta: dict, epoch: int) -> None:
        """The schedule as checkpointed; where the resumed training has another number of
        epochs, the cosine schedule is planned again over the new total, from the learning
        rate it gives at ``epoch``."""
        if meta.get("schedule"):
            schedule.load_state_dict(meta["schedule"])
        if not isinstance(schedule, torch.optim.lr_scheduler.CosineAnnealingLR):
            return
        if schedule.T_max == self.cfg.epochs:
            return
        schedule.T_max = self.cfg.epochs
        lrs = []
        for group, base in zip(schedule.optimizer.param_groups, schedule.base_lrs, strict=True):
            eta = schedule.eta_min
            group["lr"] = eta + (base - eta) * (1 + math.cos(math.pi * epoch / self.cfg.epochs)) / 2
            lrs.append(group["lr"])
        schedule._last_lr = lrs

    def _epoch(self, state: dict, fit: Split, val: Split, position: tuple, stops) -> dict:
        """One epoch from ``position`` ``(epoch, next batch, running sums, best)``: its
        remaining batches, then validation. On Ctrl-C (``stops``) the state after the last
        finished batch is saved in ``last`` before ``KeyboardInterrupt`` goes on."""
        cfg = self.cfg
        epoch, start_batch, partial, best = position
        net, optimizer = state["net"], state["optimizer"]
        order = torch.randperm(
            len(fit), generator=torch.Generator().manual_seed(batch_seed(cfg.seed, epoch))
        )
        n_batches = math.ceil(len(fit) / cfg.batch_size)
        sums = dict(partial or {"loss": 0.0, "correct": 0.0, "seen": 0, "spikes": 0.0})
        bar = self._bar(n_batches, start_batch, epoch)
        net.train()
        done = start_batch  # batches of this epoch whose update is applied
        try:
            for batch, (x, y) in enumerate(fit.batches(cfg.batch_size, order)):
                if batch < start_batch:
                    continue
                stops.check()
                self._step(state, x, y, sums, (epoch, batch), stops)
                done = batch + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{sums['loss'] / sums['seen']:.3f}",
                        acc=f"{sums['correct'] / sums['seen']:.3f}",
                    )
            net.eval()
            v = self.evaluate_split(net, val, stops)
        except KeyboardInterrupt:
            # the batch in flight (if any) is lost; the state after the last finished one is
            # saved, and a resume starts from it (validation included)
            with stops.critical():
                self._save("last", state, epoch, done, sums, best)
            if not self.quiet and self.world.main:
                print(
                    f"\ninterrupted in epoch {epoch + 1} after {done} of {n_batches} batches: "
                    f"state saved in {self.rundir.checkpoint('last')}; resume to go on",
                    file=sys.stderr,
                )
            raise
        finally:
            if bar is not None:
                bar.close()
        line = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sums["loss"] / max(sums["seen"], 1),
            "train_accuracy": sums["correct"] / max(sums["seen"], 1),
            "train_spikes_per_sample": sums["spikes"] / max(sums["seen"], 1),
            "val_accuracy": v["accuracy"],
            "val_spikes_per_sample": v["spikes_per_sample"],
        }
        if not self.quiet and self.world.main:
            print(
                f"epoch {epoch + 1:>3}/{cfg.epochs}  loss {line['train_loss']:.4f}  "
                f"train acc {line['train_accuracy']:.3f}  val acc {line['val_accuracy']:.3f}  "
                f"spikes/sample {line['val_spikes_per_sample']:.0f}"
            )
        return line

    def _step(self, state: dict, x, y, sums: dict, where: tuple[int, int], stops) -> None:
        """One training step on the batch ``(x, y)`` at ``where`` ``(epoch, batch)``: forward,
        backward, the update and the running sums. A second Ctrl-C interrupts the forward or
        backward pass (wherever it lands, the compiled kernel included), never the update."""
        from .metrics import predict

        cfg, optimizer = self.cfg, state["optimizer"]
        epoch, batch = where
        w, device = self.world, self.device
        size = len(y)  # the global batch; this process takes its share of it
        mine = distributed.shard(size, w)
        seeds = sample_seeds(batch_seed(cfg.seed, epoch, batch, 1), size)[mine]
        x, y = x[mine].to(device), y[mine].to(device)
        try:
            policy, group_size = cfg.schedule_for(epoch, batch)
            loss, scores, spikes = state["step"](x, y, seeds.to(device), policy, group_size)
            optimizer.zero_grad(set_to_none=True)
            (loss * distributed.loss_weight(len(y), size, w)).backward()
        except Exception:
            if stops.at_once:  # Ctrl-C inside native code surfaces as another error
                raise KeyboardInterrupt from None
            raise
        with stops.critical():
            optimizer.step()
            local = {
                "loss": float(loss.detach()) * len(y),
                "correct": float((predict(scores.detach()) == y).sum()) if len(y) else 0.0,
                "seen": len(y),
                "spikes": float(spikes),
            }
            for k, v in distributed.all_sum(local, self._reduce_on()).items():
                sums[k] += int(v) if k == "seen" else v

    def _reduce_on(self) -> torch.device:
        """Where sums are reduced: NCCL reduces CUDA tensors, gloo CPU ones."""
        return self.device if self.world.backend == "nccl" else torch.device("cpu")

    def _bar(self, n_batches: int, start_batch: int, epoch: int):
        if self.quiet:
            return None
        from tqdm import tqdm

        return tqdm(
            total=n_batches,
            initial=start_batch,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            leave=False,
            disable=None,  # no bars when not writing to a terminal
        )

    def evaluate_split(self, net: Network, split: Split, stops=None) -> dict:
        """Accuracy and spikes under the training's own execution (no dropout); ``stops``
        (:class:`~asyncsnn.interrupts.Interrupts`) is checked between batches."""
        from .metrics import predict

        if len(split) == 0:
            raise ValueError("no samples to evaluate")
        w = distributed.world()  # under torchrun each process takes every size-th batch
        device = next(net.parameters()).device
        correct, spikes = 0.0, 0.0
        with torch.no_grad():
            for i, (x, y) in enumerate(split.batches(max(self.cfg.batch_size, 64))):
                if i % w.size != w.rank:
                    continue
                if stops is not None:
                    stops.check()
                x, y = x.to(device), y.to(device)
                r = forward(
                    net, x, self.cfg, training=False, seed=batch_seed(self.cfg.seed, 0xE7A1, i)
                )
                _, scores = loss_and_scores(r, y, self.cfg)
                correct += float((predict(scores) == y).sum())
                spikes += float(r.spikes.sum())
        on = device if w.backend == "nccl" else torch.device("cpu")
        total = distributed.all_sum({"correct": correct, "spikes": spikes}, on)
        n = len(split)
        return {"accuracy": total["correct"] / n, "spikes_per_sample": total["spikes"] / n}

    def _save(self, name: str, state: dict, epoch: int, batch: int, partial, best: float):
        """Checkpoint ``name``: the position is (epoch, next batch) with the running sums of
        an unfinished epoch in ``partial``. Only the process of rank 0 writes."""
        if not self.world.main:
            return
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

    def _restore(self, tensors: dict, meta: dict, net, optimizer):
        """Model and optimizer from a checkpoint; returns its position ``(epoch, next batch,
        running sums, best validation accuracy)``."""
        load_model_state(net, tensors)
        try:
            restore_optimizer(optimizer, tensors, meta["optimizer"])
            position = meta["epoch"], meta["batch"], meta.get("partial"), meta["best_val_accuracy"]
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(
                f"{self.rundir.checkpoint('last')}: its training state is incomplete or does not "
                f"fit ({type(e).__name__}: {e})"
            ) from None
        return position

    def _plot(self) -> None:
        lines = self.rundir.read_metrics()
        if not lines:
            return
        from .plots import training_curves

        training_curves(lines, self.rundir.curves_path)


class _Step(nn.Module):
    """One training forward pass as a module, so that DistributedDataParallel can wrap it:
    ``(x, y, per-sample seeds, policy, F)`` to ``(mean loss, scores, spikes)``. A process
    whose share of a small last batch is empty returns a zero loss that still reaches every
    parameter, so that the gradient averaging of every process takes part."""

    def __init__(self, net: Network, cfg: TrainConfig) -> None:
        super().__init__()
        self.net, self.cfg = net, cfg

    def forward(self, x, y, seeds, policy, group_size):
        if len(y) == 0:
            zero = sum(p.sum() for p in self.net.parameters()) * 0.0
            return zero, torch.zeros(0, self.net.output.size, device=x.device), zero.detach()
        result = forward(
            self.net, x, self.cfg, training=True, seed=seeds, scheduler=policy,
            group_size=group_size,
        )  # fmt: skip
        loss, scores = loss_and_scores(result, y, self.cfg)
        return loss, scores, result.spikes.detach().sum()


def load_model_state(net: Network, tensors: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's ``model.*`` tensors into ``net``; where they do not fit (another
    architecture or data shape), a :class:`CheckpointError` lists every tensor whose shape
    differs and those missing on either side."""
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    upgrade_state(state)  # a checkpoint of an earlier version
    own = net.state_dict()
    shapes = [
        f"{k} {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in the network"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = [f"shapes differ: {'; '.join(shapes)}"] if shapes else []
        parts += [f"missing {missing}"] if missing else []
        parts += [f"unexpected {unexpected}"] if unexpected else []
        raise CheckpointError(f"the checkpoint does not fit the network: {', '.join(parts)}")
    net.load_state_dict(state)


def load_run(run_dir: str | Path, which: str = "best") -> tuple[Network, TrainConfig, DataFacts]:
    """The trained network of a run directory, its configuration and data facts.

    A run made by ``asyncsnn import`` holds its network as ``model.nir`` instead of a
    checkpoint. A run fine-tuned from a NIR file rebuilds its network from its copy of the
    graph (``init.nir``), then loads the checkpoint (:func:`network_for`).
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
    net = network_for(cfg, facts, run_dir)
    load_model_state(net, tensors)
    net.eval()
    return net, cfg, facts


#: The settings a resumed training may change: more (or the same) epochs, where the data
#: lie, and the device it runs on. Every other setting is the recorded training's; giving
#: another value is an error.
RESUME_MAY_CHANGE = ("epochs", "data_dir", "device")


def _recorded(meta: dict, path: Path) -> RunRecord:
    try:
        return RunRecord.from_dict(meta)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its metadata is not a run record ({e})") from None


def recorded_config(run_dir: str | Path) -> dict:
    """The configuration of a run directory's training as its ``last`` checkpoint records it
    (the checkpoint, not ``config.json``, is what a resume continues; ``config.json`` where the
    training stopped before its first checkpoint)."""
    run = RunDir(run_dir)
    path = run.checkpoint("last")
    if not path.is_file() and run.holds_run():  # stopped before its first checkpoint
        return run.read_record().config
    _, meta = load_checkpoint(path)
    return _recorded(meta, path).config


def resumed_config(recorded: TrainConfig, given: TrainConfig, meta: dict) -> TrainConfig:
    """The configuration a resume trains with: ``recorded`` with the settings of
    :data:`RESUME_MAY_CHANGE` taken from ``given``. Any other difference raises a
    ``ValueError`` naming it (a ``dt`` left unset in ``given`` is not one); so do fewer epochs
    than the checkpoint has trained."""
    changes = {}
    differ = []
    for f in dataclasses.fields(TrainConfig):
        old, new = getattr(recorded, f.name), getattr(given, f.name)
        if old == new or (f.name == "dt" and new is None):
            continue
        if f.name in RESUME_MAY_CHANGE:
            changes[f.name] = new
        else:
            differ.append(f"{f.name} (recorded {old!r}, given {new!r})")
    if differ:
        raise ValueError(
            "a resume continues the recorded training, but these settings differ from it: "
            f"{', '.join(differ)}; only {', '.join(RESUME_MAY_CHANGE)} may change on resume"
        )
    trained = meta.get("epoch", 0) + (1 if meta.get("batch") else 0)
    if changes.get("epochs", recorded.epochs) < trained:
        raise ValueError(
            f"the run has trained {trained} epoch(s): epochs must be at least {trained}, got "
            f"{changes['epochs']}"
        )
    return dataclasses.replace(recorded, **changes)


def unfinished(run_dir: str | Path) -> str | None:
    """Why a run directory's training is not finished (it is still running, or stopped before
    its last epoch), or ``None``: its best checkpoint may still change.

    A training is finished only when its ``last`` checkpoint records every epoch: a training
    without one (stopped in its first epoch, possibly after its first ``best``) is not."""
    run = RunDir(run_dir)
    path = run.checkpoint_json("last")
    if not path.is_file():
        if run.holds_run() and not run.is_imported():
            return "it has not finished its first epoch (still training, or stopped)"
        return None  # an imported model, or no training at all
    meta = json.loads(path.read_text())
    epoch, epochs = meta.get("epoch"), meta.get("config", {}).get("epochs")
    if epoch is None or epochs is None or (epoch >= epochs and not meta.get("partial")):
        return None
    return f"it has trained {epoch} of {epochs} epochs (still training, or stopped)"
