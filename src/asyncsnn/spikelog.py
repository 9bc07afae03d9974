"""The spike log: a run's spikes and forward steps in one HDF5 file that other tools can read.

:func:`save_spikes` writes a :class:`~asyncsnn.result.RunResult` (or the batches of one
evaluation), :func:`load_spikes` reads it back as a :class:`SpikeLog`. The file is laid out
as NIR's data format (``nir.read_data`` reads it): one node per population holding its spikes
as ``TimeGriddedData`` and, where a :class:`~asyncsnn.hooks.SpikeEvents` monitor ran, the
forward step of every spike as ``ValuedEventData``; what NIR has no place for (forward steps,
synaptic operations, the population table, the run's settings) sits in a root group
``asyncsnn`` that NIR's reader ignores. ``docs/spike-log.md`` documents every dataset.

>>> r = run(net, x, dt=1e-3, hooks=[SpikeEvents()])  # doctest: +SKIP
>>> save_spikes("run.h5", r, dt=1e-3, settings={"execution": "async"})  # doctest: +SKIP
>>> load_spikes("run.h5").population_spikes("hidden1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .result import RunResult, SpikeReadout

__all__ = [
    "FORMAT_VERSION",
    "LoggedPopulation",
    "SpikeLog",
    "SpikeLogError",
    "load_spikes",
    "save_spikes",
]

#: the ``format_version`` attribute of the ``asyncsnn`` group this module writes and reads
FORMAT_VERSION = 1
#: the NIR observable of a population's spikes, and of its spikes' forward steps
SPIKES, SPIKE_STEPS = "spikes", "spike_steps"
EVENT_KEYS = ("sample", "timestep", "neuron", "forward_step")
_FLOATS = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
_EXTRAS = ("membrane", "current")


class SpikeLogError(ValueError):
    """A spike-log file exists but cannot be read as one: not HDF5, truncated, written by
    something else, of an unknown format version, or with arrays that do not fit together.

    Attributes:
        path: the file, as given.
        reason: what is wrong with it.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"spike log {path}: {reason}")


@dataclass(frozen=True)
class LoggedPopulation:
    """A population as the spike log records it: its name, shape and global ``offset`` (the
    index of its first neuron, the input's neurons coming first)."""

    name: str
    shape: tuple[int, ...]
    offset: int
    spiking: bool = True

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class SpikeLog(SpikeReadout):
    """A spike-log file, read. The tensors are laid out as :class:`RunResult`'s (timesteps
    first), not as the file's (samples first), so code that reads a ``RunResult``'s spikes,
    forward steps and counts reads a ``SpikeLog`` too.

    Attributes:
        spikes: (timesteps, samples, neurons) spike counts of every population neuron, in the
            dtype of the run's ``RunResult.spikes``.
        forward_steps: (timesteps, samples) int64 forward steps of each sample.
        synops: (timesteps, samples) synaptic operations, input events included.
        undelivered: (timesteps, samples) int64 spikes dropped by a stop rule.
        output_counts: (samples, outputs) output spikes over the run.
        membrane, current: (timesteps, samples, outputs) of a non-spiking output, or ``None``.
        labels: (samples,) int64 labels, or ``None``.
        populations: the populations in network order.
        input_shape: the shape of one input frame; ``n_input`` its size.
        dt: the timestep length in seconds.
        settings: the run's settings as saved (JSON values).
        events: per population, where a :class:`~asyncsnn.hooks.SpikeEvents` monitor ran:
            four (spikes,) int64 tensors ``sample``, ``timestep``, ``neuron`` (within the
            population, flattened in C order) and ``forward_step``, sorted by sample,
            timestep, forward step and neuron; else ``None``.
        format_version: the file's format version.
    """

    spikes: torch.Tensor
    forward_steps: torch.Tensor
    synops: torch.Tensor
    undelivered: torch.Tensor
    output_counts: torch.Tensor
    membrane: torch.Tensor | None
    current: torch.Tensor | None
    labels: torch.Tensor | None
    populations: tuple[LoggedPopulation, ...]
    input_shape: tuple[int, ...]
    dt: float
    settings: dict
    events: dict[str, dict[str, torch.Tensor]] | None
    format_version: int = FORMAT_VERSION

    @property
    def n_input(self) -> int:
        """The number of input neurons."""
        return math.prod(self.input_shape)

    @property
    def n_samples(self) -> int:
        """The number of samples logged."""
        return self.spikes.shape[1]

    @property
    def n_timesteps(self) -> int:
        """The number of timesteps logged."""
        return self.spikes.shape[0]

    def population(self, name: str) -> LoggedPopulation:
        """The logged population named ``name`` (``KeyError`` naming the others)."""
        for p in self.populations:
            if p.name == name:
                return p
        names = [p.name for p in self.populations]
        raise KeyError(f"no population named {name!r}; the spike log has {names}")

    def _population(self, name: str) -> LoggedPopulation:
        return self.population(name)

    @property
    def _n_input(self) -> int:
        return self.n_input


# ------------------------------------------------------------------------------ writing
def save_spikes(
    path: str | os.PathLike,
    result: RunResult | Sequence[RunResult],
    *,
    dt: float,
    settings: dict | None = None,
    labels=None,
    events: bool | None = None,
    max_samples: int | None = None,
) -> Path:
    """Write the spike log of ``result`` to ``path`` (an ``.h5`` file, docs/spike-log.md).

    The file is written beside ``path`` under a temporary name and renamed over it when it
    is complete, so ``path`` never holds half a file.

    Args:
        result: one run, or the runs of consecutive batches of one evaluation (the same
            network and timesteps), joined along the samples in the order given.
        dt: the run's timestep length in seconds (``RunResult`` does not hold it).
        settings: the run's settings (execution, policy, F, seed, ...): JSON values, saved as
            one JSON text.
        labels: (samples,) integer labels of the samples, or ``None``.
        events: the forward step of every spike, recorded by a
            :class:`~asyncsnn.hooks.SpikeEvents` monitor in ``records["spike_events"]``:
            ``None`` (default) saves them where every run recorded them, ``True`` requires
            them, ``False`` leaves them out.
        max_samples: keep only the first ``max_samples`` samples.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: results that do not fit together, spikes that are not counts, events
            that do not count the spikes, settings that are not JSON, a population name
            that HDF5 cannot hold as a group name.
    """
    path = Path(path)
    results = [result] if isinstance(result, RunResult) else list(result)
    if not results:
        raise ValueError("save_spikes needs at least one RunResult")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be an int >= 1 or None, got {max_samples!r}")
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict of JSON values, got {type(settings).__name__}")
    try:
        settings_text = json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"settings must be JSON values (no NaN or infinity): {e}") from None
    net = results[0].network
    pops = _populations(results)
    for p in pops:
        if "/" in p.name or p.name == ".":
            raise ValueError(
                f"the population name {p.name!r} cannot name an HDF5 group (no '/', not '.')"
            )
    a = _join(results, events, max_samples)
    n = a["spikes"].shape[1]
    if labels is not None:
        labels = np.asarray(torch.as_tensor(labels).cpu())
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"labels must be {n} integers (one per saved sample), got an array of shape "
                f"{labels.shape} and dtype {labels.dtype}"
            )
        labels = labels.astype(np.int64)
    spikes = a["spikes"]
    if not torch.equal(spikes, spikes.round()) or bool((spikes < 0).any()):
        raise ValueError("the spikes are not counts (non-negative whole numbers)")
    if a["events"] is not None:
        _check_events(a["events"], spikes)
    _write_atomically(
        path,
        lambda f: _write(f, a, pops, net.input_shape, float(dt), settings_text, labels),
    )
    return path


def _populations(results: list[RunResult]) -> tuple[LoggedPopulation, ...]:
    def table(net) -> tuple:
        pops = (LoggedPopulation(p.name, p.shape, p.offset, p.spiking) for p in net.populations)
        return tuple(net.input_shape), tuple(pops)

    tables = [table(r.network) for r in results]
    if any(t != tables[0] for t in tables):
        raise ValueError("the results are runs of different networks (populations differ)")
    return tables[0][1]


def _join(results: list[RunResult], events: bool | None, max_samples: int | None) -> dict:
    """The results' arrays joined along the samples (detached, on the CPU), cut to
    ``max_samples``; ``events`` the joined event records or ``None``."""
    timesteps = {r.spikes.shape[0] for r in results}
    if len(timesteps) > 1:
        raise ValueError(f"the results have different numbers of timesteps: {sorted(timesteps)}")
    has = [isinstance(r.records.get("spike_events"), dict) for r in results]
    if events and not all(has):
        raise ValueError(
            "events=True, but not every run recorded its spikes' forward steps: run with "
            "hooks=[asyncsnn.SpikeEvents()]"
        )
    with_events = all(has) if events is None else bool(events)
    parts: dict[str, list] = {k: [] for k in ("spikes", "forward_steps", "synops", "undelivered")}
    parts.update(output_counts=[], membrane=[], current=[], events=[])
    taken = 0
    for r in results:
        b = r.spikes.shape[1]
        if max_samples is not None:
            b = min(b, max_samples - taken)
            if b <= 0:
                break
        for k in ("spikes", "forward_steps", "synops", "undelivered"):
            parts[k].append(getattr(r, k).detach()[:, :b].cpu())
        parts["output_counts"].append(r.output_counts.detach()[:b].cpu())
        for k in _EXTRAS:
            v = getattr(r, k)
            parts[k].append(None if v is None else v.detach()[:, :b].cpu())
        if with_events:
            ev = {k: torch.as_tensor(r.records["spike_events"][k]).cpu().long() for k in EVENT_KEYS}
            keep = ev["sample"] < b
            ev = {k: v[keep] for k, v in ev.items()}
            ev["sample"] = ev["sample"] + taken
            parts["events"].append(ev)
        taken += b
    out = {}
    for k in ("spikes", "forward_steps", "synops", "undelivered"):
        out[k] = torch.cat(parts[k], 1)
    out["output_counts"] = torch.cat(parts["output_counts"], 0)
    for k in _EXTRAS:
        present = [v is not None for v in parts[k]]
        if any(present) and not all(present):
            raise ValueError(f"some results have a {k} and others not")
        out[k] = torch.cat(parts[k], 1) if all(present) else None
    out["events"] = None
    if with_events:
        out["events"] = {k: torch.cat([e[k] for e in parts["events"]]) for k in EVENT_KEYS}
    return out


def _check_events(ev: dict[str, torch.Tensor], spikes: torch.Tensor) -> None:
    """The events count the spikes: one entry per spike of each (timestep, sample, neuron)."""
    T, B, N = spikes.shape
    t, s, j = ev["timestep"], ev["sample"], ev["neuron"]
    inside = (t >= 0) & (t < T) & (s >= 0) & (s < B) & (j >= 0) & (j < N)
    ok = bool(inside.all()) and bool((ev["forward_step"] >= 0).all())
    if not (ok and _count(((t * B + s) * N + j).numpy(), spikes.reshape(-1).numpy())):
        raise ValueError(
            "the recorded spike events do not count the result's spikes (records of another "
            "run?): record them with a SpikeEvents monitor in the same run"
        )


def _count(flat: np.ndarray, counts: np.ndarray) -> bool:
    """Whether the events at the flat positions ``flat`` count ``counts`` (flat, >= 0)
    exactly, in memory that follows the events: each position's events equal its count, and
    there are as many events as counts in all."""
    where, n = np.unique(flat, return_counts=True)
    return bool((counts[where] == n).all()) and counts.sum() == len(flat)


def _count_dtype(counts: np.ndarray) -> np.dtype:
    """bool where no neuron fired twice in a timestep, else the smallest unsigned integer."""
    top = int(counts.max()) if counts.size else 0
    for dtype, limit in ((np.bool_, 1), (np.uint8, 255), (np.uint16, 65535)):
        if top <= limit:
            return np.dtype(dtype)
    return np.dtype(np.uint32)


def _write(f: h5py.File, a: dict, pops, input_shape, dt: float, settings: str, labels) -> None:
    gz = {"compression": "gzip"}
    spikes = a["spikes"]
    T, B, _ = spikes.shape
    n_input = math.prod(input_shape)
    f.attrs["__type__"] = "NIRGraphData"
    nodes = f.create_group("nodes")
    for p in pops:
        start = p.offset - n_input
        counts = spikes[..., start : start + p.size].transpose(0, 1).numpy()
        node = nodes.create_group(p.name)
        node.attrs["__type__"] = "NIRNodeData"
        obs = node.create_group("observables")
        g = obs.create_group(SPIKES)
        g.attrs["__type__"] = "TimeGriddedData"
        g.create_dataset("data", data=counts.astype(_count_dtype(counts)), **gz)
        g.attrs["dt"] = dt
        if a["events"] is not None:
            _write_events(obs.create_group(SPIKE_STEPS), a["events"], start, p.size, B, T, dt)
    g = f.create_group("asyncsnn")
    g.attrs["format_version"] = FORMAT_VERSION
    g.attrs["dt"] = dt
    g.attrs["settings"] = settings
    g.attrs["spikes_dtype"] = str(spikes.dtype).removeprefix("torch.")
    g.attrs["input_shape"] = np.asarray(input_shape, dtype=np.int64)
    g.attrs["samples"] = B
    g.attrs["timesteps"] = T
    for k in ("forward_steps", "synops", "undelivered"):
        g.create_dataset(k, data=a[k].transpose(0, 1).numpy(), **gz)
    g.create_dataset("output_counts", data=a["output_counts"].numpy(), **gz)
    for k in _EXTRAS:
        if a[k] is not None:
            g.create_dataset(k, data=a[k].transpose(0, 1).numpy(), **gz)
    if labels is not None:
        g.create_dataset("labels", data=labels)
    table = g.create_group("populations")
    rank = max(len(p.shape) for p in pops)
    table.create_dataset("name", data=[p.name for p in pops], dtype=h5py.string_dtype())
    table.create_dataset("ndim", data=np.array([len(p.shape) for p in pops], dtype=np.int64))
    shapes = np.zeros((len(pops), rank), dtype=np.int64)
    for i, p in enumerate(pops):
        shapes[i, : len(p.shape)] = p.shape
    table.create_dataset("shape", data=shapes)
    table.create_dataset("offset", data=np.array([p.offset for p in pops], dtype=np.int64))
    table.create_dataset("spiking", data=np.array([p.spiking for p in pops], dtype=np.bool_))


def _write_events(g, ev: dict, start: int, size: int, B: int, T: int, dt: float) -> None:
    """One population's events as NIR ValuedEventData: per sample, its spikes sorted by time
    (timestep), forward step and neuron, padded to the longest sample with ``idx = -1``,
    ``time = inf``, ``value = -1``."""
    mine = (ev["neuron"] >= start) & (ev["neuron"] < start + size)
    s, t = ev["sample"][mine].numpy(), ev["timestep"][mine].numpy()
    j, k = ev["neuron"][mine].numpy() - start, ev["forward_step"][mine].numpy()
    order = np.lexsort((j, k, t, s))
    s, t, j, k = s[order], t[order], j[order], k[order]
    per = np.bincount(s, minlength=B)
    width = int(per.max()) if B else 0
    first = np.concatenate([[0], np.cumsum(per)[:-1]])
    col = np.arange(len(s)) - first[s]
    idx = np.full((B, width), -1, dtype=np.int64)
    time = np.full((B, width), np.inf, dtype=np.float64)
    value = np.full((B, width), -1, dtype=np.int64)
    idx[s, col], time[s, col], value[s, col] = j, t * dt, k
    g.attrs["__type__"] = "ValuedEventData"
    gz = {"compression": "gzip"}
    g.create_dataset("idx", data=idx, **gz)
    g.create_dataset("time", data=time, **gz)
    g.create_dataset("value", data=value, **gz)
    g.attrs["n_neurons"] = size
    g.attrs["t_max"] = T * dt


def _write_atomically(path: Path, write) -> None:
    """``write(h5py.File)`` into a temporary file beside ``path``, synced, then renamed over
    ``path``; on any failure the temporary file is removed and ``path`` left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            write(f)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ reading
def is_spike_log(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a spike-log file (an HDF5 file with the ``asyncsnn`` group and its
    ``format_version``), judged without reading its data."""
    try:
        if not Path(path).is_file() or not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            g = f.get("asyncsnn")
            return isinstance(g, h5py.Group) and "format_version" in g.attrs
    except (OSError, ValueError, RuntimeError):
        return False


def check_target(path: str | os.PathLike, force: bool = False) -> None:
    """Refuse to write a spike log over an existing file: one that is not a spike log never
    (a checkpoint, a data set, ...), a spike log unless ``force``. Raises
    ``FileExistsError`` (or ``IsADirectoryError``) naming the file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder: give the path of the .h5 file to write")
    if not path.exists():
        return
    if not is_spike_log(path):
        raise FileExistsError(
            f"{path}: exists and is not a spike log: it is never overwritten; choose another path"
        )
    if not force:
        raise FileExistsError(f"{path}: already holds a spike log; --force overwrites it")


def load_spikes(path: str | os.PathLike) -> SpikeLog:
    """Read a spike-log file written by :func:`save_spikes`.

    Only numbers and text are read (the settings are parsed as JSON): nothing in the file is
    executed.

    Raises:
        FileNotFoundError: no file at ``path``.
        SpikeLogError: (a ``ValueError``) ``path`` is a folder, not HDF5, truncated or
            corrupt, has no ``asyncsnn`` group (an HDF5 file of another program), has an
            unknown ``format_version``, or holds arrays that do not fit together.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no spike-log file at {path}")
    if path.is_dir():
        raise SpikeLogError(path, "is a folder, not a file")
    try:
        hdf5 = h5py.is_hdf5(path)
    except OSError as e:
        raise SpikeLogError(path, f"cannot be read ({e})") from None
    if not hdf5:
        raise SpikeLogError(path, "not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, path)
    except SpikeLogError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise SpikeLogError(path, f"truncated or corrupt ({type(e).__name__}: {e})") from None
    except MemoryError:
        raise SpikeLogError(path, "too large to read into this machine's memory") from None


def _read(f: h5py.File, path: Path) -> SpikeLog:
    def bad(why: str) -> SpikeLogError:
        return SpikeLogError(path, why)

    g = f.get("asyncsnn")
    if not isinstance(g, h5py.Group):
        raise bad(
            "has no 'asyncsnn' group: not a spike log written by asyncsnn (an HDF5 file of "
            "another program?)"
        )
    version = g.attrs.get("format_version")
    if not isinstance(version, (int, np.integer)) or int(version) != FORMAT_VERSION:
        shown = int(version) if isinstance(version, (int, np.integer)) else repr(version)
        raise bad(
            f"format_version {shown} is not one this asyncsnn reads ({FORMAT_VERSION}); "
            "a newer asyncsnn may have written it"
        )
    if f.attrs.get("__type__") != "NIRGraphData" or not isinstance(f.get("nodes"), h5py.Group):
        raise bad("the root is not NIR graph data (no __type__ NIRGraphData, or no 'nodes')")
    dt = _scalar(g, "dt", float, bad)
    if not 0 < dt < math.inf:
        raise bad(f"dt {dt!r} is not a positive number of seconds")
    T, B = _scalar(g, "timesteps", int, bad), _scalar(g, "samples", int, bad)
    try:
        settings = json.loads(_text(g.attrs.get("settings"), "settings", bad))
    except json.JSONDecodeError as e:
        raise bad(f"the settings are not JSON ({e})") from None
    if not isinstance(settings, dict):
        raise bad("the settings are not a JSON object")
    float_name = _text(g.attrs.get("spikes_dtype"), "spikes_dtype", bad)
    if float_name not in _FLOATS:
        raise bad(f"spikes_dtype {float_name!r} is not one of {sorted(_FLOATS)}")
    input_shape = _array(g.attrs.get("input_shape"), "input_shape", "iu", bad)
    if input_shape.ndim != 1 or not input_shape.size or (input_shape < 1).any():
        raise bad(f"input_shape {input_shape.tolist()} is not a shape")
    input_shape = tuple(int(v) for v in input_shape)
    pops = _read_populations(g, math.prod(input_shape), bad)

    def data(group, name: str, kinds: str, shape: tuple) -> np.ndarray:
        obj = group.get(name)
        if not isinstance(obj, h5py.Dataset):
            raise bad(f"{group.name}/{name} is missing")
        where = f"{group.name}/{name}"
        if obj.dtype.kind not in kinds:  # the kind first, as _array says it
            raise bad(f"{where} is of dtype {obj.dtype}, not of the expected kind ({kinds})")
        return _array(_read_dataset(obj, obj.name, bad, shape), where, kinds, bad)

    cols = []
    events: dict[str, dict[str, torch.Tensor]] = {}
    nodes = f["nodes"]
    for p in pops:
        node = nodes.get(p.name)
        if not isinstance(node, h5py.Group) or not isinstance(node.get("observables"), h5py.Group):
            raise bad(f"the population {p.name!r} has no node nodes/{p.name}/observables")
        obs = node["observables"]
        if SPIKES not in obs:
            raise bad(f"nodes/{p.name}/observables/{SPIKES} is missing")
        counts = data(obs[SPIKES], "data", "bu", (B, T, p.size))
        cols.append(torch.from_numpy(counts.astype(np.int64)))
        if SPIKE_STEPS in obs:
            events[p.name] = _read_events(obs[SPIKE_STEPS], p, B, T, dt, counts, bad)
    if events and len(events) != len(pops):
        raise bad("some populations have spike_steps and others not")
    spikes = torch.cat(cols, 2).transpose(0, 1).to(_FLOATS[float_name]).contiguous()
    n_out = pops[-1].size

    def grid(name: str, kinds: str) -> torch.Tensor:
        return torch.from_numpy(data(g, name, kinds, (B, T))).transpose(0, 1).contiguous()

    def optional(name: str, kinds: str, shape: tuple) -> torch.Tensor | None:
        return torch.from_numpy(data(g, name, kinds, shape)) if name in g else None

    extras = {}
    for k in _EXTRAS:
        v = optional(k, "f", (B, T, n_out))
        extras[k] = None if v is None else v.transpose(0, 1).contiguous()
    return SpikeLog(
        spikes=spikes,
        forward_steps=grid("forward_steps", "iu"),
        synops=grid("synops", "f"),
        undelivered=grid("undelivered", "iu"),
        output_counts=torch.from_numpy(data(g, "output_counts", "f", (B, n_out))),
        membrane=extras["membrane"],
        current=extras["current"],
        labels=optional("labels", "iu", (B,)),
        populations=pops,
        input_shape=input_shape,
        dt=dt,
        settings=settings,
        events=events or None,
        format_version=int(version),
    )


#: The most a dataset may expand from the bytes the file stores for it to the bytes it holds
#: in memory: deflate (gzip, what :func:`save_spikes` writes) compresses at most about 1032:1;
#: a dataset that declares more than this is truncated or crafted, and is refused before it
#: is read (a 64 KB file could otherwise ask for tens of gigabytes).
MAX_EXPANSION = 1100
_SMALL = 1 << 16  # bytes any dataset may declare whatever it stores (tiny or compact ones)


def _read_dataset(obj: h5py.Dataset, name: str, bad, shape: tuple | None = None) -> np.ndarray:
    """The values of ``obj``, after checking that its declared shape is ``shape`` (where
    given) and that the file stores enough bytes for what it declares."""
    if shape is not None and tuple(obj.shape) != tuple(shape):
        raise bad(f"{name} has shape {tuple(obj.shape)}, expected {tuple(shape)}")
    declared = int(np.prod(obj.shape, dtype=np.float64) * obj.dtype.itemsize)
    stored = int(obj.id.get_storage_size())
    if declared > _SMALL and declared > MAX_EXPANSION * stored:
        raise bad(
            f"{name} declares {declared / 2**20:,.1f} MiB of shape {tuple(obj.shape)} but the "
            f"file stores {stored:,} bytes of it: truncated or crafted, not read"
        )
    return obj[()]


def _scalar(g, name: str, kind: type, bad):
    v = g.attrs.get(name)
    want = (np.integer, int) if kind is int else (np.floating, float, np.integer, int)
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, want):
        raise bad(f"attribute asyncsnn.{name} is missing or not a number ({v!r})")
    v = kind(v)
    if kind is int and v < 0:
        raise bad(f"attribute asyncsnn.{name} is negative ({v})")
    return v


def _text(v, name: str, bad) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    if not isinstance(v, str):
        raise bad(f"attribute asyncsnn.{name} is missing or not text")
    return v


def _array(v, name: str, kinds: str, bad) -> np.ndarray:
    """``v`` as a numeric array whose dtype kind is one of ``kinds`` (never an object array)."""
    if not isinstance(v, np.ndarray):
        v = np.asarray(v) if isinstance(v, (int, float, np.number)) else None
    if v is None or v.dtype.kind not in kinds:
        kind = "missing" if v is None else f"of dtype {v.dtype}"
        raise bad(f"{name} is {kind}, not of the expected kind ({kinds})")
    return v


def _read_populations(g, n_input: int, bad) -> tuple[LoggedPopulation, ...]:
    table = g.get("populations")
    if not isinstance(table, h5py.Group):
        raise bad("asyncsnn/populations is missing")
    try:
        column = _read_dataset(table["name"], "asyncsnn/populations/name", bad)
        names = [v.decode() if isinstance(v, bytes) else v for v in column.tolist()]
    except (KeyError, AttributeError, UnicodeDecodeError):
        raise bad("asyncsnn/populations/name is missing or not text") from None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise bad("asyncsnn/populations/name holds no population names")
    P = len(names)
    fields = {}
    for k in ("ndim", "shape", "offset", "spiking"):
        if not isinstance(table.get(k), h5py.Dataset):
            raise bad(f"asyncsnn/populations/{k} is missing")
        kinds = "b" if k == "spiking" else "iu"
        where = f"asyncsnn/populations/{k}"
        fields[k] = _array(_read_dataset(table[k], where, bad), where, kinds, bad)
    ndim, shape, offset = fields["ndim"], fields["shape"], fields["offset"]
    if ndim.shape != (P,) or offset.shape != (P,) or fields["spiking"].shape != (P,):
        raise bad(f"the population table's columns do not all have {P} rows")
    if shape.ndim != 2 or shape.shape[0] != P or (ndim < 1).any() or (ndim > shape.shape[1]).any():
        raise bad(f"asyncsnn/populations/shape has shape {shape.shape}, which does not fit ndim")
    pops = []
    expected = n_input
    for i, name in enumerate(names):
        dims = tuple(int(d) for d in shape[i, : int(ndim[i])])
        if any(d < 1 for d in dims):
            raise bad(f"the population {name!r} has shape {dims}")
        if int(offset[i]) != expected:
            raise bad(
                f"the population {name!r} starts at neuron {int(offset[i])}, expected {expected} "
                "(the populations follow the input in network order)"
            )
        pops.append(LoggedPopulation(name, dims, int(offset[i]), bool(fields["spiking"][i])))
        expected += math.prod(dims)
    if len(set(names)) != P:
        raise bad(f"the population names repeat: {names}")
    return tuple(pops)


def _read_events(g, p: LoggedPopulation, B: int, T: int, dt: float, counts, bad) -> dict:
    where = f"nodes/{p.name}/observables/{SPIKE_STEPS}"
    if g.attrs.get("__type__") != "ValuedEventData":
        raise bad(f"{where} is not ValuedEventData")
    arrays = {}
    for k, kinds in (("idx", "iu"), ("time", "f"), ("value", "iu")):
        if not isinstance(g.get(k), h5py.Dataset):
            raise bad(f"{where}/{k} is missing")
        arrays[k] = _array(_read_dataset(g[k], f"{where}/{k}", bad), f"{where}/{k}", kinds, bad)
    idx, time, value = arrays["idx"], arrays["time"], arrays["value"]
    if idx.ndim != 2 or idx.shape[0] != B or time.shape != idx.shape or value.shape != idx.shape:
        raise bad(
            f"{where}: idx, time and value must share a shape ({B}, events), got "
            f"{idx.shape}, {time.shape} and {value.shape}"
        )
    valid = idx >= 0
    s = np.nonzero(valid)[0]
    j, step = idx[valid].astype(np.int64), value[valid].astype(np.int64)
    t = np.rint(time[valid] / dt)
    if (j >= p.size).any() or not np.isfinite(t).all() or (t < 0).any() or (t >= T).any():
        raise bad(f"{where} holds events outside the population's neurons or the run's timesteps")
    if (step < 0).any():
        raise bad(f"{where} holds a negative forward step")
    t = t.astype(np.int64)
    n = p.size
    if not _count((s * T + t) * n + j, counts.reshape(-1).astype(np.int64)):
        raise bad(f"{where} does not count the population's spikes")
    return {
        "sample": torch.from_numpy(s.astype(np.int64)),
        "timestep": torch.from_numpy(t),
        "neuron": torch.from_numpy(j),
        "forward_step": torch.from_numpy(step),
    }
