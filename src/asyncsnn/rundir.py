"""The run directory: where a trained (or imported) model lives, and its one JSON schema.

::

    RUN/config.json                 {"config": ..., "data": ..., "nir": ...}: see RunRecord
    RUN/metrics.jsonl               one JSON line per finished epoch
    RUN/checkpoints/last.safetensors  model + optimizer + position (and last.json, its metadata)
    RUN/checkpoints/best.safetensors  the model of the best validation accuracy (and best.json)
    RUN/training.png                loss and accuracy curves
    RUN/model.nir                   an imported model (``asyncsnn import``), instead of checkpoints
    RUN/init.nir                    the NIR graph a fine-tuning started from (``init``): its network
    RUN/.lock                       held by the one process writing the run (RunDir.lock)

``config.json`` holds a :class:`RunRecord`: the training configuration (the keys of
:class:`asyncsnn.training.TrainConfig`), the :class:`DataFacts` of its data set and, for an
imported model, where the NIR graph came from. A checkpoint's metadata starts with the same
record, so that each checkpoint describes the model it holds.

Every JSON file is written through :func:`dumps`: NaN and infinities become ``null`` and
nothing that is not JSON can be written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_NAMES",
    "DataFacts",
    "NIRSource",
    "RunDir",
    "RunDirBusy",
    "RunRecord",
    "atomic_write_text",
    "checkpoint_meta",
    "dumps",
    "jsonable",
    "write_json",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
CURVES = "training.png"
MODEL_NIR = "model.nir"
INIT_NIR = "init.nir"
CHECKPOINT_NAMES = ("best", "last")
CHECKPOINT_FORMAT = "asyncsnn-checkpoint-1"
LOCK = ".lock"


class RunDirBusy(RuntimeError):
    """Another process is writing to the run directory."""


# ------------------------------------------------------------------------------ JSON
def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: tensors become lists, tuples lists, keys strings, and
    NaN, ``inf`` and ``-inf`` become ``None``.

    >>> jsonable({"a": float("nan"), 1: (torch.tensor([1.0, float("inf")]),)})
    {'a': None, '1': [[1.0, None]]}
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text of :func:`jsonable` ``(obj)`` (``allow_nan=False``: never ``NaN``)."""
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: the
    file on disk is always complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented strict JSON, written atomically."""
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


# ------------------------------------------------------------------------------ records
@dataclass(frozen=True, kw_only=True)
class DataFacts:
    """What a model needs to know about its data set; ``dt`` in seconds.

    A training knows them all; an imported model knows only the input shape, the number of
    classes, ``dt`` and perhaps the timesteps (the others are ``None``).
    """

    input_shape: tuple[int, ...]
    timesteps: int | None = None
    n_classes: int
    dt: float
    classes: tuple[str, ...] | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    test_samples: int | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if not shape or not all(_is_int(n) and n >= 1 for n in shape):
            raise ValueError(f"input_shape must be positive ints, got {self.input_shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(n) for n in shape))
        if not _is_int(self.n_classes) or self.n_classes < 1:
            raise ValueError(f"n_classes must be an int >= 1, got {self.n_classes!r}")
        if (
            isinstance(self.dt, bool)
            or not isinstance(self.dt, (int, float))
            or not (self.dt > 0 and math.isfinite(self.dt))
        ):
            raise ValueError(f"dt must be a finite number of seconds > 0, got {self.dt!r}")
        object.__setattr__(self, "dt", float(self.dt))
        if self.timesteps is not None and (not _is_int(self.timesteps) or self.timesteps < 1):
            raise ValueError(f"timesteps must be an int >= 1 or None, got {self.timesteps!r}")
        for name in ("train_samples", "val_samples", "test_samples"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 0):
                raise ValueError(f"{name} must be an int >= 0 or None, got {v!r}")
        if self.classes is not None:
            if isinstance(self.classes, str):
                raise ValueError(f"classes must be a sequence of names, got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    def to_dict(self) -> dict:
        """The JSON form (the ``data`` of ``config.json``); every key, ``None`` where unknown."""
        return {
            "input_shape": list(self.input_shape),
            "timesteps": self.timesteps,
            "n_classes": self.n_classes,
            "dt": self.dt,
            "classes": None if self.classes is None else list(self.classes),
            "train_samples": self.train_samples,
            "val_samples": self.val_samples,
            "test_samples": self.test_samples,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> DataFacts:
        """Read :meth:`to_dict`'s form; missing optional keys are ``None``."""
        return cls(**_known_keys(cls, d, "data facts"))


@dataclass(frozen=True)
class NIRSource:
    """Where an imported model's graph came from and how its time constants were read."""

    source: str
    discretization: str

    def to_dict(self) -> dict:
        return {"source": self.source, "discretization": self.discretization}

    @classmethod
    def from_dict(cls, d: Mapping) -> NIRSource:
        return cls(**_known_keys(cls, d, "NIR source"))


@dataclass(frozen=True)
class RunRecord:
    """The content of ``config.json``: the training configuration as a dict (the keys of
    :class:`asyncsnn.training.TrainConfig`), the data facts and, for an imported model, its
    NIR source."""

    config: dict
    data: DataFacts
    nir: NIRSource | None = None

    def to_dict(self) -> dict:
        d = {"config": dict(self.config), "data": self.data.to_dict()}
        if self.nir is not None:
            d["nir"] = self.nir.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> RunRecord:
        """Read the record from ``config.json`` or from a checkpoint's metadata (whose other
        keys, the training's position, are left to the training)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a run record is a JSON object, got a {type(d).__name__}")
        for key in ("config", "data"):
            if key not in d:
                raise ValueError(f"a run record needs a {key!r} entry; it has {sorted(d)}")
            if not isinstance(d[key], Mapping):
                raise ValueError(f"a run record's {key!r} is an object, got {d[key]!r}")
        nir = d.get("nir")
        return cls(
            config=dict(d["config"]),
            data=DataFacts.from_dict(d["data"]),
            nir=None if nir is None else NIRSource.from_dict(nir),
        )


def _known_keys(cls, d: Mapping, what: str) -> dict:
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {known}")
    return dict(d)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# ------------------------------------------------------------------------------ the folder
class RunDir:
    """The files of one run directory.

    >>> run = RunDir("runs/first")
    >>> run.checkpoint("best").as_posix()
    'runs/first/checkpoints/best.safetensors'
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def curves_path(self) -> Path:
        return self.path / CURVES

    @property
    def nir_path(self) -> Path:
        return self.path / MODEL_NIR

    @property
    def init_nir_path(self) -> Path:
        """The copy of the NIR graph a training fine-tuned from (its network's architecture and
        neurons; the checkpoints hold the trained weights)."""
        return self.path / INIT_NIR

    def checkpoint(self, which: str) -> Path:
        """The checkpoint file ``which`` (``"best"`` or ``"last"``)."""
        if which not in CHECKPOINT_NAMES:
            raise ValueError(f"a checkpoint is one of {CHECKPOINT_NAMES}, got {which!r}")
        return self.path / CHECKPOINTS / f"{which}.safetensors"

    def checkpoint_json(self, which: str) -> Path:
        """The JSON copy of checkpoint ``which``'s metadata."""
        return self.checkpoint(which).with_suffix(".json")

    def holds_run(self) -> bool:
        """Whether the folder already holds a run (its ``config.json``)."""
        return self.config_path.is_file()

    def written(self) -> list[str]:
        """The files of a run the folder holds (configuration, metrics, checkpoints, model),
        by name; empty for a new or empty folder."""
        names = [CONFIG, METRICS, MODEL_NIR, INIT_NIR]
        names += [f"{CHECKPOINTS}/{w}.safetensors" for w in CHECKPOINT_NAMES]
        return [n for n in names if (self.path / n).is_file()]

    # ---------------------------------------------------------------- one writer
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory's lock for the block: one writer per run. Raises
        :class:`RunDirBusy` where another process holds it. The lock is an OS file lock
        (``flock``): it ends with the process that holds it, however that ends, so a killed
        training never leaves it stuck."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a+") as f:  # closing it releases the lock
            if not _try_lock(f):
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunDirBusy(
                    f"{self.path} is being written by {holder}; wait for it to finish (or stop "
                    "it) before training or resuming into this folder"
                )
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()}\n")
            f.flush()
            yield

    def remove_leftovers(self) -> list[Path]:
        """Remove the temporary files that a kill during an atomic write leaves (call with
        the lock held); returns them."""
        found = []
        for folder in (self.path, self.path / CHECKPOINTS):
            if folder.is_dir():
                found += [p for p in folder.glob(".*.tmp") if p.is_file()]
        for p in found:
            p.unlink(missing_ok=True)
        return found

    def is_imported(self) -> bool:
        """Whether the run's model is an imported NIR graph rather than checkpoints."""
        return self.nir_path.is_file()

    def write_init_nir(self, source: str | Path) -> None:
        """Copy the NIR file ``source`` to :attr:`init_nir_path` atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{INIT_NIR}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f, open(source, "rb") as src:
                shutil.copyfileobj(src, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.init_nir_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # ---------------------------------------------------------------- config.json
    def write_record(self, record: RunRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.config_path, record.to_dict())

    def read_record(self) -> RunRecord:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory: no {CONFIG}")
        try:
            d = json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.config_path}: not JSON ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{self.config_path}: holds a {type(d).__name__}, not a run record")
        try:
            return RunRecord.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{self.config_path}: {e}") from None

    # ---------------------------------------------------------------- metrics.jsonl
    def append_metrics(self, line: Mapping) -> None:
        """Append one epoch's line (flushed to disk before it returns)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as f:
            f.write(dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        """Every epoch's line, in order (none when the file does not exist). A last line cut
        short (a kill while it was appended) is not one: it is left out."""
        return [line for _, line in self._metrics_lines()]

    def trim_metrics(self, epoch: int) -> None:
        """Keep only the lines of epochs up to ``epoch`` (a resumed training writes the
        later ones again), and drop a last line cut short."""
        if not self.metrics_path.exists():
            return
        keep = [text for text, line in self._metrics_lines() if line["epoch"] <= epoch]
        atomic_write_text(self.metrics_path, "".join(ln + "\n" for ln in keep))

    def _metrics_lines(self) -> list[tuple[str, dict]]:
        if not self.metrics_path.exists():
            return []
        raw = self.metrics_path.read_text()
        texts = raw.split("\n")
        out = []
        for i, text in enumerate(texts, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                if i == len(texts):  # no newline after it: an append cut short
                    break
                raise ValueError(
                    f"{self.metrics_path}, line {i}: not a JSON line; repair or delete the file"
                ) from None
            if not isinstance(line, dict) or not _is_int(line.get("epoch")):
                raise ValueError(f"{self.metrics_path}, line {i}: not an epoch's metrics line")
            out.append((text, line))
        return out


def _try_lock(f) -> bool:
    """Take an exclusive, non-blocking lock on the open file ``f``; whether it was free."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def checkpoint_meta(record: RunRecord, **position: Any) -> dict:
    """A checkpoint's metadata: the format, the run record, then the training's position
    (epoch, batch, optimizer state, ...)."""
    return {"format": CHECKPOINT_FORMAT, **record.to_dict(), **position}
