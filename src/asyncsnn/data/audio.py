"""Audio in, cochlear spikes out: WAV files, SHD-schema HDF5 files, and folders of recordings.

- :func:`read_wav`: a PCM WAV file as mono float samples in [-1, 1] and its sample rate, with
  errors that name the file and the problem (unreadable, stereo, empty, ...);
- :func:`write_shd`: spike trains in the HDF5 schema of the Spiking Heidelberg Digits
  (``spikes/times``, ``spikes/units``, ``labels``, ``extra/keys``, ...), written atomically, so
  that :class:`asyncsnn.data.SHD` (and tonic's ``SHD``) read them;
- :func:`encode_files`, :func:`encode_folder`: recordings through the cochlear encoder
  (:func:`asyncsnn.data.cochlea_events`) into such a file (``asyncsnn encode-audio``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptDatasetError, DatasetNotFoundError

__all__ = ["encode_files", "encode_folder", "labels_of_folder", "read_wav", "write_shd"]

PathLike = str | os.PathLike[str]


def read_wav(path: PathLike) -> tuple[np.ndarray, int]:
    """``(samples, sample_rate)`` of a PCM WAV file: mono float64 samples in [-1, 1].

    Raises :class:`CorruptDatasetError` naming the file for anything that is not a readable
    mono PCM recording with samples (stereo, 24-bit packed, compressed, empty, truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no WAV file at {path}")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            n = f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise CorruptDatasetError(path, f"not a readable PCM WAV file ({e})") from None
    if channels != 1:
        raise CorruptDatasetError(path, f"{channels} channels: give mono audio (one channel)")
    dtypes = {1: np.uint8, 2: np.int16, 4: np.int32}
    if width not in dtypes:
        raise CorruptDatasetError(path, f"{8 * width}-bit samples: use 8, 16 or 32-bit PCM")
    data = np.frombuffer(raw, dtype=np.dtype(dtypes[width]).newbyteorder("<"))
    if data.size == 0:
        raise CorruptDatasetError(path, "no samples (an empty recording)")
    if len(raw) < n * width:
        raise CorruptDatasetError(
            path,
            f"truncated: the header announces {n} samples, the data chunk holds "
            f"{len(raw) // width}",
        )
    if width == 1:
        samples = (data.astype(np.float64) - 128.0) / 128.0
    else:
        samples = data.astype(np.float64) / float(2 ** (8 * width - 1))
    return samples, int(rate)


def write_shd(
    path: PathLike,
    events: Sequence[np.ndarray],
    labels: Sequence[int],
    keys: Sequence[str],
    extra: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write spike trains in SHD's HDF5 schema, atomically (a temporary file renamed over
    ``path``): ``spikes/times`` (float32 seconds) and ``spikes/units`` (uint16 channels), one
    variable-length entry per recording, ``labels`` (uint16), ``extra/keys`` (class names) and
    the arrays of ``extra`` under ``extra/``; ``attrs`` as JSON in the file's attributes.

    ``events`` are :data:`~asyncsnn.data.AUDIO_EVENT_DTYPE` arrays (``t`` in microseconds).
    """
    import h5py

    if len(events) != len(labels):
        raise ValueError(f"{len(events)} recordings but {len(labels)} labels")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            times = f.create_dataset(
                "spikes/times", (len(events),), dtype=h5py.vlen_dtype(np.float32)
            )
            units = f.create_dataset(
                "spikes/units", (len(events),), dtype=h5py.vlen_dtype(np.uint16)
            )
            for i, ev in enumerate(events):
                times[i] = (ev["t"] / 1e6).astype(np.float32)
                units[i] = ev["x"].astype(np.uint16)
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys]))
            for name, values in (extra or {}).items():
                values = np.asarray(values)
                if values.dtype.kind == "U":
                    values = np.array([v.encode() for v in values])
                f.create_dataset(f"extra/{name}", data=values)
            f.attrs["asyncsnn"] = json.dumps(attrs or {}, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def encode_files(
    files: Sequence[Path],
    encode: Callable[[np.ndarray, int], np.ndarray],
    progress: bool = True,
    label: str = "encoding audio",
) -> list[np.ndarray]:
    """Each WAV file through ``encode(samples, sample_rate)``, in order, with a progress bar
    (where ``progress`` and a terminal); an encoder's ``ValueError`` names the file."""
    it: Any = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=label, leave=False, disable=None)
    out = []
    for path in it:
        samples, rate = read_wav(path)
        try:
            out.append(encode(samples, rate))
        except ValueError as e:
            raise CorruptDatasetError(path, str(e)) from None
    return out


def labels_of_folder(folder: PathLike) -> tuple[list[Path], list[int], list[str]]:
    """The WAV files of ``folder`` and their labels: one class per subfolder (``yes/*.wav``,
    ``no/*.wav``: the keyword-spotting layout; classes in sorted order), else the number that
    starts each file name (``3_jackson_0.wav``: FSDD's layout). Returns ``(files, labels,
    class names)``; a file whose label cannot be told is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"no folder at {folder}")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.wav")))
    if subfolders:
        files, labels = [], []
        for c, sub in enumerate(subfolders):
            for f in sorted(sub.glob("*.wav")):
                files.append(f)
                labels.append(c)
        return files, labels, [s.name for s in subfolders]
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DatasetNotFoundError(f"no .wav files in {folder} (nor in subfolders of it)")
    labels = []
    for f in files:
        m = re.match(r"(\d+)", f.stem)
        if m is None:
            raise ValueError(
                f"cannot tell the class of {f}: name files '<class number>_....wav' or put "
                "each class in its own subfolder"
            )
        labels.append(int(m.group(1)))
    n = max(labels) + 1
    return files, labels, [str(c) for c in range(n)]


def encode_folder(
    folder: PathLike,
    out: PathLike,
    encode: Callable[[np.ndarray, int], np.ndarray],
    attrs: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Every WAV file of ``folder`` (see :func:`labels_of_folder`) through ``encode`` into the
    SHD-schema file ``out``; ``extra/names`` holds each recording's file name."""
    files, labels, keys = labels_of_folder(folder)
    events = encode_files(files, encode, progress)
    names = np.array([str(f.relative_to(folder)) for f in files])
    return write_shd(out, events, labels, keys, extra={"names": names}, attrs=attrs)
