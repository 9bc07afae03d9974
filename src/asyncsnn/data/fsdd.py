"""The Free Spoken Digit Dataset (Jakobovski et al.) as SHD-style cochlear spikes.

FSDD is 3,000 recordings of the spoken digits 0-9 (6 speakers, 50 per digit and speaker, 8 kHz
mono WAV). :class:`FSDD` reads the FSDD repository's layout, ``recordings/{digit}_{speaker}_
{index}.wav``, with the data set's own split (index 0-4 of every digit and speaker: test, 300;
5-49: training, 2,700), turns each recording into spikes of 700 cochlear channels with
:func:`asyncsnn.data.cochlea_events` on first use (with a progress bar), and caches them as an
SHD-schema HDF5 file (:func:`asyncsnn.data.audio.write_shd`), so that a second load is
instant. The cache's name holds a digest of everything the spikes depend on (the encoder, its
settings and its code, the recordings' names and sizes): a changed setting encodes again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from .audio import encode_files, write_shd
from .base import EventTransform
from .datasets import SHD, _find_folder
from .errors import DatasetNotFoundError

__all__ = ["FSDD"]

PathLike = str | os.PathLike[str]

_NAME = re.compile(r"(\d)_([A-Za-z]+)_(\d+)\.wav")
_TEST_INDICES = range(5)  # the data set's own convention: index 0-4 is the test set


class FSDD(SHD):
    """Free Spoken Digit Dataset: spoken digits as spikes of 700 cochlear channels.

    Args:
        root: folder holding ``fsdd/recordings/`` (or ``recordings/`` directly).
        train: training split (index 5-49, 2,700 recordings) if True, else test (index 0-4,
            300).
        dt: bin length in seconds (default 10 ms).
        n_timesteps: number of bins (default: 1 s cut into bins of ``dt``; recordings last
            0.14 to 2.28 s, 0.44 s on average).
        encoder: ``"builtin"`` (asyncsnn's vectorised cochlea, default) or ``"lauscher"`` (the
            exact model, where the ``lauscher`` package is installed).
        seed: the encoder's seed.
        cache_dir: where the encoded spikes are cached (default ``<data folder>/cache``).
        progress: show a progress bar while encoding.
        transform: optional function applied to each event stream before binning.

    Items are ``(frames (T, 700) float32 spike counts, digit)``; bins start at t = 0.
    """

    name = "fsdd"
    classes = tuple(str(d) for d in range(10))
    n_classes = 10
    n_train = 2700
    n_test = 300
    folder_name = "fsdd"
    layout = (
        "<root>/fsdd/recordings/{digit}_{speaker}_{index}.wav (the FSDD repository's layout; "
        "<root> may also hold recordings/ directly)"
    )

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        encoder: str = "builtin",
        seed: int = 0,
        cache_dir: PathLike | None = None,
        progress: bool = True,
        transform: EventTransform | None = None,
    ) -> None:
        folder = _find_folder(root, self.folder_name, "recordings", "FSDD", train, self.layout)
        files = _split_files(folder / "recordings", train)
        settings = {"encoder": encoder, "seed": int(seed), "n_channels": self.sensor_size[0]}
        key = _cache_key(files, settings)
        cache = Path(cache_dir) if cache_dir is not None else folder / "cache"
        split = "train" if train else "test"
        path = cache / f"fsdd_{split}_{key}.h5"
        if not path.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with _held(cache / f".fsdd_{split}.lock"):  # one process encodes, the others wait
                if not path.is_file():
                    _encode_split(files, path, settings, progress)
                    for stale in cache.glob(f"fsdd_{split}_*.h5"):  # other settings' spikes
                        if stale != path:
                            stale.unlink(missing_ok=True)
        super().__init__(cache, train, dt, n_timesteps, transform=transform, _path=path)
        self.cache_path = path
        self.settings = settings


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """An exclusive OS lock on ``path`` for the block, waiting for it where another process
    holds it (POSIX ``flock``; elsewhere no lock). It ends with the process, however that
    ends."""
    with open(path, "a+") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no waiting; the cache is written atomically anyway
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        yield


def _split_files(folder: Path, train: bool) -> list[Path]:
    files = []
    for f in sorted(folder.glob("*.wav")):
        m = _NAME.fullmatch(f.name)
        if m is not None and (int(m.group(3)) in _TEST_INDICES) != train:
            files.append(f)
    if not files:
        raise DatasetNotFoundError(
            f"FSDD {'training' if train else 'test'} split not found: no recordings named "
            f"<digit>_<speaker>_<index>.wav in {folder}"
        )
    return files


def _cache_key(files: list[Path], settings: dict[str, Any]) -> str:
    """A digest of what the spikes depend on: the settings, the encoder's code and the
    recordings (names and sizes)."""
    from . import cochlea

    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    h.update(Path(cochlea.__file__).read_bytes())
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()[:16]


def _encode_split(files: list[Path], path: Path, settings: dict[str, Any], progress: bool):
    from . import cochlea

    split = path.stem.split("_")[1]
    encode = partial(cochlea.cochlea_events, **settings)
    events = encode_files(files, encode, progress, label=f"encoding FSDD {split}")
    parts = [_NAME.fullmatch(f.name).groups() for f in files]
    speakers = sorted({p[1] for p in parts})
    write_shd(
        path,
        events,
        [int(p[0]) for p in parts],
        [str(d) for d in range(10)],
        extra={
            "speaker": [speakers.index(p[1]) for p in parts],
            "speaker_names": speakers,
            "index": [int(p[2]) for p in parts],
            "names": [f.name for f in files],
        },
        attrs=settings,
    )
