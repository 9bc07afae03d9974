"""MNIST recorded by the emulated event camera with N-MNIST's geometry: ``mnist-saccades``.

:class:`MNISTSaccades` is an N-MNIST-like event data set made from the 10,000 real MNIST test
images (two IDX files, 1.6 MB) instead of the 1.1 GB of N-MNIST recordings: the same sensor, the
same three saccades, event streams made by :mod:`.emulator`.
"""

from __future__ import annotations

import os

import numpy as np

from .base import EventTransform
from .digits import EventImageDataset, ImageSetOptions, stratified_split
from .emulator import EmulatorConfig, images_to_events
from .errors import CorruptDatasetError
from .io import read_mnist

__all__ = ["MNISTSaccades"]


class MNISTSaccades(EventImageDataset):
    """The 10,000 real MNIST test images recorded by the emulated camera as N-MNIST was made.

    Each 28x28 image (0-255) is scaled to [0, 1] and recorded on a 34x34 ON/OFF sensor with
    N-MNIST's three saccades of 100 ms along the emulator's triangle of 3.5 x 7 pixels (the
    defaults of :class:`.emulator.EmulatorConfig`), with a contrast threshold of 0.4 instead of
    0.2 (:data:`EMULATOR`). The threshold was chosen on the first 100 MNIST test images, whose
    real recordings are N-MNIST's test samples 00001-00100: they then give as many events as
    those recordings (0.99 times as many on average, correlation 0.80 per image; at 0.2, twice
    as many), and their events' centroid follows the same triangle in both. Over the 10,000
    images that is 1,358 to 7,359 events per sample, 3,930 on average (real N-MNIST: about
    1,100 to 7,200), about 5.7% of the 2 x 34 x 34 inputs per 10 ms bin.
    Unlike the real recordings, the emulated saccades move at constant speed and have no
    background noise.

    The split is fixed: :func:`.digits.stratified_split` of the 10,000 images with test
    fraction 0.2 and seed 0, giving 8,000 training and 2,000 test images with every class in
    proportion (MNIST's training images are not used).

    Conversion: converting all images at once, vectorised (``precompute=True``), took 21 s for
    the 2,000 test images and 86 s for the 8,000 training images on a 2-core machine shared with
    other jobs (about 8.5 ms per image in blocks of 128, 40 ms for one image alone). So images
    are converted lazily, on first use, and kept in memory (nothing is written to disk): a
    sample read in order (at most 4 places after the previous read: a pass over the data set,
    or over a dense subset) converts the next :attr:`block_size` images at once, vectorised;
    a sample read out of order converts that image alone. A first pass in order over the
    2,000 test images took 28 s, over the 8,000 training images 101 s (same machine), about
    what converting them all at once costs, and a first item about 1 s. The events do not
    depend on the order of reading (:func:`.emulator.images_to_events`).

    Args:
        root: folder holding ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``
            (or the same under ``root/mnist/`` or ``root/MNIST/raw/``), read with
            :func:`.io.read_mnist`.
        train: training split if True, else test split.
        dt: bin length in seconds (default 10 ms).
        n_timesteps: number of bins (default: the three saccades, 300 ms, cut into bins of
            ``dt``; 30 at the default ``dt``).
        seed: the emulator's seed (the split does not depend on it).
        config: the emulator's settings (default :data:`EMULATOR`).
        transform: optional function applied to each event stream before binning.

    Items are ``(frames (T, 2, 34, 34) float32 event counts, digit)``; channel 0 is OFF, 1 ON.
    """

    name = "mnist-saccades"
    sensor_size = (34, 34, 2)
    classes = tuple(str(d) for d in range(10))
    n_classes = 10
    n_samples = 10000
    n_train = 8000
    n_test = 2000
    test_fraction = 0.2
    split_seed = 0
    default_dt = 0.01
    default_n_timesteps = 30
    block_size = 128
    """Images converted at once when a data set is read in order."""
    EMULATOR = EmulatorConfig(contrast_threshold=0.4)
    _IN_ORDER_GAP = 4  # a read at most this many places after the previous one is "in order"

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        seed: int = 0,
        config: EmulatorConfig | None = None,
        transform: EventTransform | None = None,
    ) -> None:
        images, labels = read_mnist(root, train=False)
        if len(images) != self.n_samples:
            raise CorruptDatasetError(
                root,
                f"{len(images)} MNIST test images (t10k-images-idx3-ubyte), expected "
                f"{self.n_samples}: {self.name} is made from the whole MNIST test set",
            )
        train_idx, test_idx = stratified_split(labels, self.test_fraction, self.split_seed)
        chosen = train_idx if train else test_idx
        super().__init__(
            images[chosen],
            labels[chosen],
            sensor_size=self.sensor_size,
            dt=dt,
            seed=seed,
            config=config or self.EMULATOR,
            max_value=255.0,
            ids=chosen.tolist(),
            options=ImageSetOptions(train=train, n_timesteps=n_timesteps, transform=transform),
        )
        self.indices = chosen
        self._last_read = -1

    def events(self, index: int) -> np.ndarray:
        """Events of image ``index`` (microseconds), converted on first use."""
        index = self._index(index)
        events = self._events[index]
        if events is None:
            in_order = 0 < index - self._last_read <= self._IN_ORDER_GAP
            stop = min(len(self), index + self.block_size) if in_order else index + 1
            todo = [i for i in range(index, stop) if self._events[i] is None]
            converted = images_to_events(
                self.images[todo],
                sensor_size=self.sensor_size,
                seed=self.seed,
                config=self.config,
                indices=[self.ids[i] for i in todo],
                chunk_size=self.block_size,
            )
            for i, converted_events in zip(todo, converted, strict=True):
                self._events[i] = converted_events
            events = converted[0]  # todo[0] is index
        self._last_read = index
        return events
