"""Loaders of the published data sets, reading local copies in their standard on-disk layout.

asyncsnn never downloads. Each loader looks for its files under ``root`` (tonic's layout for the
event data sets, torchvision's for CIFAR-10) and, when something is missing, raises
:class:`.errors.DatasetNotFoundError` naming the missing file or folder, where it was looked for
and the expected layout. A file that exists but cannot be read raises
:class:`.errors.CorruptDatasetError` naming the file and the problem.

============  ======================  =============  =======  ===============
data set      events                  sensor         classes  public split
============  ======================  =============  =======  ===============
N-MNIST       ON/OFF, 3 saccades      34x34x2        10       60000 / 10000
SHD           700 cochlear channels   700            20       8156 / 2264
FSDD          700 channels, encoded   700            10       2700 / 300
DVS Gesture   ON/OFF, ~6 s            128x128x2      11       1176 / 288
CIFAR-10      images as currents      32x32x3        10       50000 / 10000
============  ======================  =============  =======  ===============
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import EventDataset, EventTransform, FrameDataset
from .errors import CorruptDatasetError, DatasetNotFoundError
from .events import AUDIO_EVENT_DTYPE, CAMERA_EVENT_DTYPE, downsample_sensor_size
from .events import downsample_events as _downsample
from .events import first_saccade as _first_saccade
from .io import read_cifar_batch, read_nmnist_bin

__all__ = ["CIFAR10", "DVSGesture", "NMNIST", "SHD"]

PathLike = str | os.PathLike[str]

_NO_DOWNLOAD = "asyncsnn does not download data sets: put a local copy there"


def _split_name(train: bool) -> str:
    return "training" if train else "test"


def _find_folder(
    root: PathLike, folder_name: str, entry: str, dataset: str, train: bool, layout: str
) -> Path:
    """The folder holding ``entry``: ``root/folder_name`` (tonic's layout) or ``root`` itself."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset} not found: the root folder {root} does not exist. Expected layout: "
            f"{layout}. {_NO_DOWNLOAD}"
        )
    candidates = [root / folder_name, root]
    for candidate in candidates:
        if (candidate / entry).exists():
            return candidate
    looked = " or ".join(str(c / entry) for c in candidates)
    raise DatasetNotFoundError(
        f"{dataset} {_split_name(train)} split not found: no {entry} at {looked}. "
        f"Expected layout: {layout}. {_NO_DOWNLOAD}"
    )


class NMNIST(EventDataset):
    """N-MNIST (Orchard et al., 2015): MNIST digits recorded by an event camera making three
    saccades of about 100 ms each.

    Reads tonic's layout, ``<root>/NMNIST/{Train,Test}/<digit>/<id>.bin``; ``root`` may also be
    the folder holding ``Train/`` and ``Test/`` directly (a partial copy is fine). Files are read
    with :func:`.io.read_nmnist_bin`, in the order of digit then file name.

    Args:
        root: folder holding ``NMNIST/`` (or ``Train/`` and ``Test/``).
        train: training split if True, else test split.
        dt: bin length in seconds (default 10 ms).
        n_timesteps: number of bins (default: 300 ms, the three saccades, cut into bins of
            ``dt``; 30 at the default ``dt``).
        first_saccade: keep only events with t < 100 ms (about a third of them).
        transform: optional function applied to each event stream before binning.

    Items are ``(frames (T, 2, 34, 34) float32 event counts, digit)``; channel 0 is OFF, 1 ON.
    """

    name = "nmnist"
    sensor_size = (34, 34, 2)
    classes = tuple(str(d) for d in range(10))
    n_classes = 10
    n_train = 60000
    n_test = 10000
    default_dt = 0.01
    default_n_timesteps = 30
    folder_name = "NMNIST"
    layout = (
        "<root>/NMNIST/Train/<digit>/<id>.bin and <root>/NMNIST/Test/<digit>/<id>.bin "
        "(tonic's layout; <root> may also be the folder holding Train/ and Test/)"
    )

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        first_saccade: bool = False,
        transform: EventTransform | None = None,
    ) -> None:
        super().__init__(train, dt, n_timesteps, self.sensor_size, True, transform)
        self.first_saccade = bool(first_saccade)
        split = "Train" if train else "Test"
        self.folder = (
            _find_folder(root, self.folder_name, split, "N-MNIST", train, self.layout) / split
        )
        self.files: list[Path] = []
        for digit in range(10):
            files = sorted((self.folder / str(digit)).glob("*.bin"))
            self.files.extend(files)
            self.targets.extend([digit] * len(files))
        if not self.files:
            raise DatasetNotFoundError(
                f"N-MNIST {_split_name(train)} split not found: no .bin files in "
                f"{self.folder}/0 .. {self.folder}/9. Expected layout: {self.layout}. "
                f"{_NO_DOWNLOAD}"
            )

    def events(self, index: int) -> np.ndarray:
        """Events of sample ``index`` (microseconds), only the first saccade if so configured."""
        path = self.files[self._index(index)]
        events = read_nmnist_bin(path)
        if len(events) == 0:
            raise CorruptDatasetError(path, "no events (every N-MNIST sample has events)")
        width, height, _ = self.sensor_size
        if events["x"].max() >= width or events["y"].max() >= height:
            raise CorruptDatasetError(
                path,
                f"event coordinates up to x={int(events['x'].max())}, y={int(events['y'].max())}"
                f" outside the {width}x{height} sensor",
            )
        return _first_saccade(events) if self.first_saccade else events


_ENGLISH = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_GERMAN = ("null", "eins", "zwei", "drei", "vier", "fuenf", "sechs", "sieben", "acht", "neun")
_SHD_CLASSES = tuple(f"english {w}" for w in _ENGLISH) + tuple(f"german {w}" for w in _GERMAN)


class SHD(EventDataset):
    """Spiking Heidelberg Digits (Cramer et al., 2020): spoken digits (English and German) as
    spikes of 700 cochlear channels.

    Reads ``<root>/SHD/shd_train.h5`` and ``<root>/SHD/shd_test.h5`` (tonic's layout; ``root``
    may also hold the files directly), or any file in SHD's HDF5 schema with :meth:`from_file`:
    ``spikes/times`` (per recording, seconds), ``spikes/units`` (channel per spike), ``labels``,
    and optionally ``extra/keys`` (class names).

    Args:
        root: folder holding ``SHD/`` (or the ``.h5`` files).
        train: training split if True, else test split.
        dt: bin length in seconds (default 10 ms).
        n_timesteps: number of bins (default: 1 s cut into bins of ``dt``; 100 at the default
            ``dt``; recordings last up to about 1.4 s).
        transform: optional function applied to each event stream before binning.

    Items are ``(frames (T, 700) float32 spike counts, label)``; bins start at t = 0.
    """

    name = "shd"
    sensor_size = (700, 1, 1)
    classes = _SHD_CLASSES
    n_classes = 20
    n_train = 8156
    n_test = 2264
    default_dt = 0.01
    default_n_timesteps = 100
    folder_name = "SHD"
    layout = (
        "<root>/SHD/shd_train.h5 and <root>/SHD/shd_test.h5 (tonic's layout, the files unzipped;"
        " <root> may also hold the .h5 files directly)"
    )

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        transform: EventTransform | None = None,
        _path: Path | None = None,
    ) -> None:
        super().__init__(train, dt, n_timesteps, self.sensor_size, False, transform)
        if _path is None:
            filename = "shd_train.h5" if train else "shd_test.h5"
            _path = _find_folder(root, self.folder_name, filename, "SHD", train, self.layout)
            _path = _path / filename
        self.path = Path(_path)
        self._file: Any = None
        self._file_pid: int | None = None
        self._read_index()

    @classmethod
    def from_file(
        cls,
        path: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        transform: EventTransform | None = None,
    ) -> SHD:
        """Read any HDF5 file in SHD's schema (e.g. SHD-style spikes made from other audio).

        Class names come from the file's ``extra/keys`` when present; ``train`` only labels
        the split.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(
                f"spike file not found: no file at {path} (an HDF5 file in SHD's schema: "
                "spikes/times, spikes/units, labels)"
            )
        return cls(path.parent, train, dt, n_timesteps, transform=transform, _path=path)

    def _open(self) -> Any:
        import h5py

        try:
            return h5py.File(self.path, "r")
        except OSError as error:
            raise CorruptDatasetError(self.path, f"not a readable HDF5 file ({error})") from None

    def _read_index(self) -> None:
        with self._open() as file:
            missing = [k for k in ("spikes/times", "spikes/units", "labels") if k not in file]
            if missing:
                raise CorruptDatasetError(
                    self.path, f"missing {', '.join(missing)} (SHD's HDF5 schema)"
                )
            n = len(file["labels"])
            lengths = {len(file["spikes/times"]), len(file["spikes/units"])}
            if lengths != {n}:
                raise CorruptDatasetError(
                    self.path,
                    f"{n} labels but {len(file['spikes/times'])} spike-time and "
                    f"{len(file['spikes/units'])} spike-unit entries",
                )
            labels = np.asarray(file["labels"][()], dtype=np.int64)
            if "extra/keys" in file:
                keys = file["extra/keys"][()]
                self.classes = tuple(
                    k.decode() if isinstance(k, bytes) else str(k) for k in np.ravel(keys)
                )
                self.n_classes = len(self.classes)
        if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise CorruptDatasetError(
                self.path, f"labels outside 0..{self.n_classes - 1}: {sorted(set(labels))[:5]}"
            )
        self.targets = labels.tolist()

    def _handle(self) -> Any:
        # One read-only handle per process (DataLoader workers reopen it after a fork).
        if self._file is None or self._file_pid != os.getpid():
            self._file, self._file_pid = self._open(), os.getpid()
        return self._file

    def close(self) -> None:
        """Close the HDF5 file if open (it is reopened on the next access)."""
        if self._file is not None and self._file_pid == os.getpid():
            self._file.close()
        self._file = self._file_pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = state["_file_pid"] = None
        return state

    def events(self, index: int) -> np.ndarray:
        """Spikes of recording ``index``: ``t`` (microseconds) and ``x`` (channel 0-699)."""
        index = self._index(index)
        file = self._handle()
        times = np.asarray(file["spikes/times"][index], dtype=np.float64)
        units = np.asarray(file["spikes/units"][index])
        if times.shape != units.shape or times.ndim != 1:
            raise CorruptDatasetError(
                self.path,
                f"recording {index}: {times.size} spike times but {units.size} spike units",
            )
        if times.size and (not np.isfinite(times).all() or times.min() < 0):
            raise CorruptDatasetError(self.path, f"recording {index}: negative or invalid times")
        if units.size and (units.min() < 0 or units.max() >= self.sensor_size[0]):
            raise CorruptDatasetError(
                self.path,
                f"recording {index}: channel {int(units.max())} outside "
                f"0..{self.sensor_size[0] - 1}",
            )
        events = np.empty(times.size, dtype=AUDIO_EVENT_DTYPE)
        events["t"] = np.round(times * 1e6)
        events["x"] = units
        if events.size > 1 and np.any(np.diff(events["t"]) < 0):
            events = events[np.argsort(events["t"], kind="stable")]
        return events


_USER_FOLDER = re.compile(r"user(\d+)_(.+)")


class DVSGesture(EventDataset):
    """IBM DVS Gesture (Amir et al., 2017): 11 hand and arm gestures by 29 people under several
    lighting conditions, recorded with a 128x128 DVS.

    Reads tonic's layout of the preprocessed set (recordings already cut per gesture, time in
    milliseconds): ``<root>/DVSGesture/ibmGestureTrain/<userNN_lighting>/<label>.npy`` and
    ``ibmGestureTest/...``, each ``.npy`` an ``(N, 4)`` array of columns x, y, p, t (ms);
    ``root`` may also hold ``ibmGestureTrain/`` directly.

    Args:
        root: folder holding ``DVSGesture/`` (or ``ibmGestureTrain/``, ``ibmGestureTest/``).
        train: training split if True, else test split.
        dt: bin length in seconds (default 20 ms).
        n_timesteps: number of bins (default: 6 s cut into bins of ``dt``; 300 at the default
            ``dt``).
        downsample: spatial down-sampling factor (default 4: 128x128 -> 32x32; 1 keeps it).
        transform: optional function applied to each event stream (after down-sampling) before
            binning.

    Items are ``(frames (T, 2, 128/downsample, 128/downsample) float32 counts, label)``; bins
    start at the recording's first event.

    Attributes:
        users, lighting: the subject number and lighting condition of each sample.
    """

    name = "dvsgesture"
    sensor_size = (128, 128, 2)
    classes = (
        "hand clapping",
        "right hand wave",
        "left hand wave",
        "right arm clockwise",
        "right arm counter-clockwise",
        "left arm clockwise",
        "left arm counter-clockwise",
        "arm roll",
        "air drums",
        "air guitar",
        "other gestures",
    )
    n_classes = 11
    n_train = 1176
    n_test = 288
    default_dt = 0.02
    default_n_timesteps = 300
    folder_name = "DVSGesture"
    layout = (
        "<root>/DVSGesture/ibmGestureTrain/<userNN_lighting>/<label>.npy and "
        "<root>/DVSGesture/ibmGestureTest/... (tonic's layout: each .npy an (N, 4) array of "
        "x, y, p, t in ms; <root> may also hold ibmGestureTrain/ and ibmGestureTest/)"
    )

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        downsample: int = 4,
        transform: EventTransform | None = None,
    ) -> None:
        binning_size = downsample_sensor_size(self.sensor_size, downsample)
        super().__init__(train, dt, n_timesteps, binning_size, True, transform)
        self.downsample = int(downsample)
        split = "ibmGestureTrain" if train else "ibmGestureTest"
        self.folder = (
            _find_folder(root, self.folder_name, split, "DVS Gesture", train, self.layout) / split
        )
        self.files: list[Path] = []
        self.users: list[int | None] = []
        self.lighting: list[str | None] = []
        for folder in sorted(p for p in self.folder.iterdir() if p.is_dir()):
            match = _USER_FOLDER.fullmatch(folder.name)
            labelled = [(int(f.stem), f) for f in folder.glob("*.npy") if f.stem.isdigit()]
            for label, path in sorted(labelled):
                if label >= self.n_classes:
                    raise CorruptDatasetError(
                        path, f"label {label} (from the file name) is not a class 0-10"
                    )
                self.files.append(path)
                self.targets.append(label)
                self.users.append(int(match.group(1)) if match else None)
                self.lighting.append(match.group(2) if match else None)
        if not self.files:
            raise DatasetNotFoundError(
                f"DVS Gesture {_split_name(train)} split not found: no <label>.npy files in the "
                f"sub-folders of {self.folder}. Expected layout: {self.layout}. {_NO_DOWNLOAD}"
            )

    def events(self, index: int) -> np.ndarray:
        """Events of sample ``index`` (microseconds), down-sampled by ``downsample``."""
        path = self.files[self._index(index)]
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise CorruptDatasetError(path, f"not a readable .npy array ({error})") from None
        if raw.ndim != 2 or raw.shape[1] != 4 or not np.issubdtype(raw.dtype, np.number):
            raise CorruptDatasetError(
                path,
                f"expected an (N, 4) numeric array of x, y, p, t; found {raw.dtype} {raw.shape}",
            )
        x, y, p, t_ms = (raw[:, i] for i in range(4))
        width, height, _ = self.sensor_size
        if raw.shape[0] and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
            raise CorruptDatasetError(
                path, f"event coordinates outside the {width}x{height} sensor"
            )
        if raw.shape[0] and not np.isin(p, (0, 1)).all():
            raise CorruptDatasetError(path, "polarities must be 0 or 1")
        events = np.empty(raw.shape[0], dtype=CAMERA_EVENT_DTYPE)
        events["t"] = np.round(t_ms.astype(np.float64) * 1000.0)
        events["x"] = x
        events["y"] = y
        events["p"] = p
        if events.size > 1 and np.any(np.diff(events["t"]) < 0):
            events = events[np.argsort(events["t"], kind="stable")]
        return _downsample(events, self.downsample) if self.downsample > 1 else events

    def _t_start(self, events: np.ndarray) -> float:
        return float(events["t"][0]) / 1e6


class CIFAR10(FrameDataset):
    """CIFAR-10 presented as analogue input currents: each image repeated for every timestep.

    Reads torchvision's layout, the python batches of ``cifar-10-python.tar.gz`` extracted:
    ``<root>/cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` and ``test_batch``
    (``root`` may also be the ``cifar-10-batches-py`` folder). Batches are unpickled by
    :func:`.io.read_cifar_batch`, which only rebuilds numpy arrays and runs no other code.

    Args:
        root: folder holding ``cifar-10-batches-py/``.
        train: the 5 training batches if True, else the test batch.
        dt: the timestep in seconds the currents are presented with (default 10 ms; only the
            neurons' leak depends on it).
        n_timesteps: number of timesteps each image is repeated for (default 10, whatever
            ``dt``).
        normalize: standardise each channel with CIFAR-10's training mean and standard deviation
            (:attr:`mean`, :attr:`std`); otherwise intensities are in [0, 1].

    Items are ``(frames (T, 3, 32, 32) float32, label)``.
    """

    name = "cifar10"
    sensor_size = (32, 32, 3)
    classes = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )
    n_classes = 10
    n_train = 50000
    n_test = 10000
    default_dt = 0.01
    default_n_timesteps = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    folder_name = "cifar-10-batches-py"

    @classmethod
    def _default_n_timesteps(cls, dt: float) -> int:
        return cls.default_n_timesteps

    layout = (
        "<root>/cifar-10-batches-py/data_batch_1 .. data_batch_5 and test_batch (the python "
        "version, cifar-10-python.tar.gz, extracted; <root> may also be that folder)"
    )

    def __init__(
        self,
        root: PathLike,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        normalize: bool = True,
    ) -> None:
        super().__init__(train, dt, n_timesteps, (3, 32, 32))
        self.normalize = bool(normalize)
        names: Sequence[str] = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        folder = _find_folder(root, self.folder_name, names[0], "CIFAR-10", train, self.layout)
        images, labels = [], []
        for name in names:
            path = folder / name
            if not path.is_file():
                raise DatasetNotFoundError(
                    f"CIFAR-10 {_split_name(train)} split incomplete: no file {path}. "
                    f"Expected layout: {self.layout}. {_NO_DOWNLOAD}"
                )
            batch_images, batch_labels = read_cifar_batch(path)
            images.append(batch_images)
            labels.append(batch_labels)
        self.folder = folder
        self.images = np.concatenate(images)
        self.targets = np.concatenate(labels).tolist()
        self._mean = torch.tensor(self.mean).view(3, 1, 1)
        self._std = torch.tensor(self.std).view(3, 1, 1)

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a float32 tensor (3, 32, 32), normalised if so configured."""
        image = torch.from_numpy(self.images[self._index(index)]).float() / 255.0
        return (image - self._mean) / self._std if self.normalize else image

    def _frames(self, index: int) -> torch.Tensor:
        return self.image(index).unsqueeze(0).repeat(self.n_timesteps, 1, 1, 1)
