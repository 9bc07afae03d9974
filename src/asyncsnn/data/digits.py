"""Image data sets recorded by the emulated event camera, and the built-in ``Digits`` set.

:class:`EventImageDataset` turns any array of grayscale images into an N-MNIST-like event data
set with :mod:`.emulator` (e.g. the real MNIST images read by :func:`.io.read_mnist`).
:class:`Digits` does so for scikit-learn's 1,797 real 8x8 handwritten digits, which ship with
scikit-learn: a small event data set that needs no download and trains in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from .base import EventDataset, EventTransform
from .emulator import EmulatorConfig, image_to_events, images_to_events

__all__ = ["Digits", "EventImageDataset", "ImageSetOptions", "resize_images", "stratified_split"]


def resize_images(images: npt.ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, h, w)`` intensities to ``(N, *size)``, clipped to [0, 1]."""
    batch = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if batch.ndim != 3:
        raise ValueError(f"images must have shape (N, height, width), got {tuple(batch.shape)}")
    out = torch.nn.functional.interpolate(
        batch[:, None], size=tuple(size), mode="bilinear", align_corners=False
    )
    return out[:, 0].clamp(0.0, 1.0).numpy().astype(np.float64)


def stratified_split(
    labels: npt.ArrayLike, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible stratified train/test split.

    For each class (in increasing order), its indices are shuffled with
    ``numpy.random.default_rng(seed)`` and the first ``round(test_fraction * n_class)`` go to the
    test side.

    Returns:
        ``(train_indices, test_indices)``, each sorted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(test_fraction * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True)
class ImageSetOptions:
    """How an :class:`EventImageDataset` presents its recordings as a data set.

    Attributes:
        train: whether the images are a training split (the data set's ``train``).
        n_timesteps: number of bins (default: the three saccades, ``3 * saccade_duration / dt``).
        transform: optional function applied to each event stream before binning.
        classes: class names (default ``"0" .. str(max label)``).
    """

    train: bool = True
    n_timesteps: int | None = None
    transform: EventTransform | None = None
    classes: Sequence[str] | None = None


class EventImageDataset(EventDataset):
    """Grayscale images recorded by the emulated event camera (three saccades, ON/OFF events).

    Each image is scaled to [0, 1] by ``max_value``, optionally resized to ``image_size``,
    and recorded with :func:`.emulator.image_to_events` using ``seed`` and its entry of
    ``ids`` (so noise is tied to the image, not to its position in a subset). Events are
    converted on first use and kept in memory; ``precompute=True`` converts all images at once,
    vectorised, which is much faster for a whole set.

    Args:
        images: ``(N, h, w)`` array, any real dtype.
        labels: ``(N,)`` integer labels.
        sensor_size: ``(width, height, 2)`` of the emulated camera.
        dt: bin length in seconds (default 10 ms).
        seed: the emulator's seed.
        config: the emulator's settings (default :class:`.emulator.EmulatorConfig`).
        max_value: intensity that maps to 1.0 (default 255 for uint8 images, else 1.0).
        image_size: ``(height, width)`` to resize images to before recording, or None.
        ids: per-image identifiers for the noise draw (default ``0..N-1``).
        precompute: convert every image at construction.
        options: the split, number of bins, transform and class names
            (default :class:`ImageSetOptions`: a training split, the three saccades' bins,
            no transform, classes ``"0" .. str(max label)``).

    Items are ``(frames (T, 2, H, W) float32 event counts, label)``.
    """

    name = "event-images"
    default_dt = 0.01

    def __init__(
        self,
        images: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        sensor_size: Sequence[int],
        dt: float | None = None,
        seed: int = 0,
        config: EmulatorConfig | None = None,
        max_value: float | None = None,
        image_size: tuple[int, int] | None = None,
        ids: Sequence[int] | None = None,
        precompute: bool = False,
        options: ImageSetOptions | None = None,
    ) -> None:
        options = ImageSetOptions() if options is None else options
        self.config = config or EmulatorConfig()
        n_timesteps = options.n_timesteps
        if n_timesteps is None:
            n_timesteps = max(1, round(self.config.duration / (dt or self.default_dt)))
        self.sensor_size = tuple(int(s) for s in sensor_size)
        super().__init__(options.train, dt, n_timesteps, self.sensor_size, True, options.transform)
        raw = np.asarray(images)
        labels = np.asarray(labels)
        if raw.ndim != 3 or labels.shape != (raw.shape[0],):
            raise ValueError(
                f"images must be (N, h, w) with one label each; got images {raw.shape} and "
                f"labels {labels.shape}"
            )
        if max_value is None:
            max_value = 255.0 if raw.dtype == np.uint8 else 1.0
        scaled = raw.astype(np.float64) / float(max_value)
        if scaled.size and (scaled.min() < 0 or scaled.max() > 1):
            raise ValueError(
                f"image values must lie in [0, max_value={max_value}]; found "
                f"{raw.min()}..{raw.max()}: give the right max_value"
            )
        self.images = resize_images(scaled, image_size) if image_size is not None else scaled
        self.seed = int(seed)
        self.ids = list(range(len(raw))) if ids is None else [int(i) for i in ids]
        if len(self.ids) != len(raw):
            raise ValueError(f"got {len(self.ids)} ids for {len(raw)} images")
        self.targets = labels.astype(np.int64).tolist()
        if options.classes is not None:
            self.classes = tuple(options.classes)
            self.n_classes = len(self.classes)
        elif not type(self).classes:
            top = int(labels.max()) + 1 if labels.size else 0
            self.classes = tuple(str(c) for c in range(top))
            self.n_classes = top
        self._events: list[np.ndarray | None] = [None] * len(raw)
        if precompute and len(raw):
            self._events = list(
                images_to_events(
                    self.images,
                    sensor_size=self.sensor_size,
                    seed=self.seed,
                    config=self.config,
                    indices=self.ids,
                )
            )

    def events(self, index: int) -> np.ndarray:
        """Events of image ``index`` (microseconds), converted on first use."""
        index = self._index(index)
        events = self._events[index]
        if events is None:
            events = image_to_events(
                self.images[index],
                sensor_size=self.sensor_size,
                seed=self.seed,
                config=self.config,
                index=self.ids[index],
            )
            self._events[index] = events
        return events


class Digits(EventImageDataset):
    """scikit-learn's 1,797 real 8x8 handwritten digits, recorded by the emulated camera.

    Each image (intensities 0-16) is scaled to [0, 1], resized to 12x12 (bilinear) and recorded
    on a 16x16 sensor with N-MNIST's three saccades of 100 ms, scaled to the smaller image
    (amplitude 1.5 x 3 pixels; :data:`EMULATOR`). That gives about 500 events per digit, about
    3.5% of the 512 inputs per 10 ms bin, as in N-MNIST.

    The split is fixed: :func:`stratified_split` with test fraction 0.2 and seed 0, giving
    1,438 training and 359 test images with every class in proportion. Conversion is vectorised
    and takes a few seconds; nothing is written to disk.

    Args:
        root: ignored (the data ship with scikit-learn); accepted like every loader's.
        train: training split if True, else test split.
        dt: bin length in seconds (default 10 ms).
        n_timesteps: number of bins (default: the three saccades, 300 ms, cut into bins of
            ``dt``; 30 at the default ``dt``).
        seed: the emulator's seed (the split does not depend on it).
        config: the emulator's settings (default :data:`EMULATOR`).
        transform: optional function applied to each event stream before binning.

    Items are ``(frames (T, 2, 16, 16) float32 event counts, digit)``.
    """

    name = "digits"
    sensor_size = (16, 16, 2)
    image_size = (12, 12)
    classes = tuple(str(d) for d in range(10))
    n_classes = 10
    n_samples = 1797
    n_train = 1438
    n_test = 359
    test_fraction = 0.2
    split_seed = 0
    default_dt = 0.01
    default_n_timesteps = 30
    EMULATOR = EmulatorConfig(saccade_amplitude=(1.5, 3.0), contrast_threshold=0.3, log_offset=0.25)

    def __init__(
        self,
        root: object = None,
        train: bool = True,
        dt: float | None = None,
        n_timesteps: int | None = None,
        *,
        seed: int = 0,
        config: EmulatorConfig | None = None,
        transform: EventTransform | None = None,
    ) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels = digits.images, digits.target
        train_idx, test_idx = stratified_split(labels, self.test_fraction, self.split_seed)
        chosen = train_idx if train else test_idx
        super().__init__(
            images[chosen],
            labels[chosen],
            sensor_size=self.sensor_size,
            dt=dt,
            seed=seed,
            config=config or self.EMULATOR,
            max_value=16.0,
            image_size=self.image_size,
            ids=chosen.tolist(),
            precompute=True,
            options=ImageSetOptions(train=train, n_timesteps=n_timesteps, transform=transform),
        )
        self.indices = chosen
