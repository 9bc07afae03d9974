"""An emulated event camera that records still images with three saccades, as N-MNIST was made.

N-MNIST (Orchard et al., 2015) was recorded by showing each MNIST digit on a monitor to an ATIS
event camera moved by a pan-tilt unit through three ~100 ms saccades along a triangle. This
module does the same in software.

**Path.** The image's apparent displacement ``(dx, dy)`` on the sensor (pixels; x to the right,
y downwards) goes through the triangle::

    (0, 0) -> (ax/2, ay) -> (ax, 0) -> (0, 0)

at constant speed, one side per saccade: right-down, then right-up, then left back to the start.
This is the motion that tonic's N-MNIST stabilisation removes, with N-MNIST's amplitude
``(ax, ay) = (3.5, 7)`` pixels as default. At ``t = 0`` the image (``h x w`` pixels) is placed
so that the triangle's bounding box is centred on the sensor: top-left corner at
``((W - w - ax) / 2, (H - h - ay) / 2)``. The sensor samples the moving image with bilinear
interpolation (black outside it).

**Pixels.** Each pixel follows the log intensity ``L = log(I + log_offset)`` (``I`` in [0, 1])
every ``time_resolution`` seconds and compares it with its reference level ``L_ref``. When
``L - L_ref >= theta_on`` it emits an ON event (``p = 1``), when ``L_ref - L >= theta_off`` an
OFF event (``p = 0``); the event's time is where the crossing falls inside the step (linear
interpolation), and the reference is reset to ``L``. A pixel then ignores changes for
``refractory_period`` seconds (its reference follows ``L`` meanwhile), so it fires at most once
per step. ``theta_on`` and ``theta_off`` are drawn per pixel once per seed,
``contrast_threshold + threshold_mismatch * N(0, 1)`` (a fixed pattern of the sensor, shared by
all images). Optional background noise adds Poisson events at ``noise_rate`` Hz per pixel with
random polarity, drawn per image from ``(seed, index)``.

The result is deterministic for a seed: the same image, seed and index give the same events
whether converted alone (:func:`image_to_events`) or in a batch (:func:`images_to_events`).

>>> import numpy as np
>>> image = np.zeros((8, 8)); image[2:6, 3:5] = 1.0
>>> events = image_to_events(image, sensor_size=(12, 16, 2), seed=0)
>>> bool(np.all(np.diff(events["t"]) >= 0)), sorted(set(events["p"].tolist()))
(True, [0, 1])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .events import CAMERA_EVENT_DTYPE

__all__ = ["EmulatorConfig", "image_to_events", "images_to_events", "saccade_offsets"]


@dataclass(frozen=True)
class EmulatorConfig:
    """Settings of the emulated camera and its saccades. Durations in seconds.

    Attributes:
        saccade_duration: length of each of the three saccades (s).
        saccade_amplitude: ``(ax, ay)`` extent of the triangular path in pixels.
        time_resolution: simulation step (s); a pixel fires at most once per step.
        contrast_threshold: mean ON and OFF threshold on the change of log intensity.
        threshold_mismatch: standard deviation of the per-pixel thresholds (log units).
        refractory_period: dead time of a pixel after an event (s).
        log_offset: ``L = log(I + log_offset)``; keeps black pixels from amplifying tiny changes.
        noise_rate: background events per pixel per second (Hz); 0 disables noise.
    """

    saccade_duration: float = 0.1
    saccade_amplitude: tuple[float, float] = (3.5, 7.0)
    time_resolution: float = 0.001
    contrast_threshold: float = 0.2
    threshold_mismatch: float = 0.02
    refractory_period: float = 0.001
    log_offset: float = 0.1
    noise_rate: float = 0.0

    def __post_init__(self) -> None:
        positive = {
            "saccade_duration": self.saccade_duration,
            "time_resolution": self.time_resolution,
            "contrast_threshold": self.contrast_threshold,
            "log_offset": self.log_offset,
        }
        for name, value in positive.items():
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"EmulatorConfig.{name} must be positive, got {value}")
        non_negative = {
            "threshold_mismatch": self.threshold_mismatch,
            "refractory_period": self.refractory_period,
            "noise_rate": self.noise_rate,
        }
        for name, value in non_negative.items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"EmulatorConfig.{name} must be >= 0, got {value}")
        amplitude = tuple(float(a) for a in self.saccade_amplitude)
        if len(amplitude) != 2 or not all(math.isfinite(a) and a >= 0 for a in amplitude):
            raise ValueError(
                f"EmulatorConfig.saccade_amplitude must be two pixel extents >= 0 (ax, ay), "
                f"got {self.saccade_amplitude}"
            )
        object.__setattr__(self, "saccade_amplitude", amplitude)
        if self.saccade_duration / self.time_resolution < 1:
            raise ValueError("EmulatorConfig.time_resolution must not exceed saccade_duration")

    @property
    def duration(self) -> float:
        """Length of a recording: three saccades (s)."""
        return 3 * self.saccade_duration

    @property
    def n_steps(self) -> int:
        """Number of simulation steps in a recording."""
        return max(1, round(self.duration / self.time_resolution))


def saccade_offsets(times: npt.ArrayLike, config: EmulatorConfig) -> tuple[np.ndarray, np.ndarray]:
    """Apparent displacement ``(dx, dy)`` of the image in pixels at ``times`` (seconds).

    Piecewise linear through ``(0, 0), (ax/2, ay), (ax, 0), (0, 0)``, one side per saccade;
    constant at the start point outside ``[0, 3 * saccade_duration]``.
    """
    ax, ay = config.saccade_amplitude
    knots = np.arange(4) * config.saccade_duration
    t = np.asarray(times, dtype=np.float64)
    dx = np.interp(t, knots, [0.0, ax / 2, ax, 0.0], left=0.0, right=0.0)
    dy = np.interp(t, knots, [0.0, ay, 0.0, 0.0], left=0.0, right=0.0)
    return dx, dy


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] < 1 or images.shape[2] < 1:
        raise ValueError(f"images must have shape (N, height, width), got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"images must be floating point intensities in [0, 1], got dtype {images.dtype}; "
            "divide integer images by their maximum value (255 for MNIST, 16 for sklearn digits)"
        )
    if images.size and (not np.isfinite(images).all() or images.min() < 0.0 or images.max() > 1.0):
        raise ValueError("image intensities must be finite and within [0, 1]")
    return images.astype(np.float64, copy=False)


def _sensor(sensor_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(s) for s in sensor_size)
    if len(size) != 3 or size[2] != 2 or min(size) < 1:
        raise ValueError(
            f"sensor_size must be (width, height, 2) for an ON/OFF camera, got {sensor_size}"
        )
    return size[0], size[1]


class _Renderer:
    """Samples a batch of images, shifted by sub-pixel offsets, onto the sensor grid."""

    def __init__(self, images: np.ndarray, width: int, height: int, amplitude: tuple[float, float]):
        n, h, w = images.shape
        self.width, self.height = width, height
        self.x0 = (width - w - amplitude[0]) / 2
        self.y0 = (height - h - amplitude[1]) / 2
        # Integer shifts used lie in [floor(x0), floor(x0 + ax) + 1] (same for y): pad enough
        # for every sensor window to fall inside the canvas.
        self.margin_x = max(
            0, math.floor(self.x0 + amplitude[0]) + 1, width - w - math.floor(self.x0)
        )
        self.margin_y = max(
            0, math.floor(self.y0 + amplitude[1]) + 1, height - h - math.floor(self.y0)
        )
        self.canvas = np.zeros((n, h + 2 * self.margin_y, w + 2 * self.margin_x))
        top, left = self.margin_y, self.margin_x
        self.canvas[:, top : top + h, left : left + w] = images

    def _placed(self, ky: int, kx: int) -> np.ndarray:
        # sensor[r, c] = image[r - ky, c - kx]
        top, left = self.margin_y - ky, self.margin_x - kx
        return self.canvas[:, top : top + self.height, left : left + self.width]

    def __call__(self, dx: float, dy: float) -> np.ndarray:
        sx, sy = self.x0 + dx, self.y0 + dy
        kx, ky = math.floor(sx), math.floor(sy)
        fx, fy = sx - kx, sy - ky
        out = (1 - fy) * (1 - fx) * self._placed(ky, kx)
        if fx > 0:
            out = out + (1 - fy) * fx * self._placed(ky, kx + 1)
        if fy > 0:
            out = out + fy * (1 - fx) * self._placed(ky + 1, kx)
            if fx > 0:
                out = out + fy * fx * self._placed(ky + 1, kx + 1)
        return out


def _thresholds(seed: int, config: EmulatorConfig, shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel ON and OFF thresholds, shape (2, H, W): a fixed pattern of the sensor."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E45]))
    theta = config.contrast_threshold + config.threshold_mismatch * rng.standard_normal((2, *shape))
    return np.maximum(theta, 0.1 * config.contrast_threshold)


def _noise_events(
    seed: int, index: int, config: EmulatorConfig, width: int, height: int
) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4015E, index]))
    duration_us = round(config.duration * 1e6)
    n = int(rng.poisson(config.noise_rate * config.duration * width * height))
    events = np.empty(n, dtype=CAMERA_EVENT_DTYPE)
    events["t"] = rng.integers(0, duration_us, n)
    events["x"] = rng.integers(0, width, n)
    events["y"] = rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    return events


def _convert_chunk(
    images: np.ndarray,
    width: int,
    height: int,
    theta: np.ndarray,
    config: EmulatorConfig,
) -> list[np.ndarray]:
    n = images.shape[0]
    render = _Renderer(images, width, height, config.saccade_amplitude)
    step_us = config.time_resolution * 1e6
    duration_us = round(config.duration * 1e6)
    refractory_us = config.refractory_period * 1e6
    theta_on, theta_off = theta[0], theta[1]

    times = np.arange(config.n_steps + 1) * config.time_resolution
    dxs, dys = saccade_offsets(times, config)
    level = np.log(render(dxs[0], dys[0]) + config.log_offset)
    reference = level.copy()
    last_event = np.full(level.shape, -np.inf)
    found: list[tuple[np.ndarray, ...]] = []
    for k in range(1, config.n_steps + 1):
        previous = level
        level = np.log(render(dxs[k], dys[k]) + config.log_offset)
        now_us = k * step_us
        free = now_us - last_event >= refractory_us
        change = level - reference
        on = free & (change >= theta_on)
        off = free & (change <= -theta_off)
        fire = on | off
        reference = np.where(free, reference, level)
        if not fire.any():
            continue
        image, row, col = np.nonzero(fire)
        polarity = on[image, row, col]
        crossing = reference[image, row, col] + np.where(
            polarity, theta_on[row, col], -theta_off[row, col]
        )
        before, after = previous[image, row, col], level[image, row, col]
        span = after - before
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(span != 0, (crossing - before) / span, 1.0)
        t_us = (k - 1 + np.clip(fraction, 0.0, 1.0)) * step_us
        t_us = np.maximum(t_us, last_event[image, row, col] + refractory_us)
        last_event[image, row, col] = t_us
        reference[image, row, col] = level[image, row, col]
        found.append((image, np.minimum(np.round(t_us), duration_us - 1), col, row, polarity))

    if found:
        image, t_us, col, row, polarity = (
            np.concatenate(parts) for parts in zip(*found, strict=True)
        )
    else:
        image = t_us = col = row = polarity = np.zeros(0, dtype=np.int64)
    order = np.lexsort((polarity, col, row, t_us, image))
    events = np.empty(len(order), dtype=CAMERA_EVENT_DTYPE)
    events["t"] = t_us[order]
    events["x"] = col[order]
    events["y"] = row[order]
    events["p"] = polarity[order]
    bounds = np.searchsorted(image[order], np.arange(n + 1))
    return [events[bounds[i] : bounds[i + 1]] for i in range(n)]


def images_to_events(
    images: npt.ArrayLike,
    *,
    sensor_size: Sequence[int],
    seed: int,
    config: EmulatorConfig | None = None,
    indices: Sequence[int] | None = None,
    chunk_size: int = 512,
) -> list[np.ndarray]:
    """Record a batch of grayscale images with the emulated camera (vectorised over images).

    Args:
        images: ``(N, height, width)`` floating-point intensities in [0, 1].
        sensor_size: ``(width, height, 2)`` of the emulated camera.
        seed: fixes the sensor's threshold pattern and the background noise.
        config: camera and saccade settings (default :class:`EmulatorConfig`).
        indices: one integer per image naming it for the noise draw (default ``0..N-1``), so
            that an image gives the same events in any batch.
        chunk_size: images simulated at once (bounds memory).

    Returns:
        One time-sorted event array (:data:`.events.CAMERA_EVENT_DTYPE`) per image, with
        timestamps in microseconds within ``[0, 3 * saccade_duration)``.
    """
    config = config or EmulatorConfig()
    images = _check_images(np.asarray(images))
    width, height = _sensor(sensor_size)
    n = images.shape[0]
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise ValueError(f"got {len(indices)} indices for {n} images")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    theta = _thresholds(int(seed), config, (height, width))
    out: list[np.ndarray] = []
    for start in range(0, n, chunk_size):
        out.extend(_convert_chunk(images[start : start + chunk_size], width, height, theta, config))
    if config.noise_rate > 0:
        for i, index in enumerate(indices):
            noise = _noise_events(int(seed), index, config, width, height)
            merged = np.concatenate([out[i], noise])
            out[i] = merged[np.argsort(merged["t"], kind="stable")]
    return out


def image_to_events(
    image: npt.ArrayLike,
    *,
    sensor_size: Sequence[int],
    seed: int,
    config: EmulatorConfig | None = None,
    index: int = 0,
) -> np.ndarray:
    """Record one grayscale image with the emulated camera; see :func:`images_to_events`.

    Args:
        image: ``(height, width)`` floating-point intensities in [0, 1].
        sensor_size: ``(width, height, 2)`` of the emulated camera.
        seed: fixes the sensor's threshold pattern and the background noise.
        config: camera and saccade settings (default :class:`EmulatorConfig`).
        index: the image's index for the noise draw.

    Returns:
        Time-sorted camera events (microseconds) spanning three saccades.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must have shape (height, width), got {image.shape}")
    return images_to_events(
        image[None], sensor_size=sensor_size, seed=seed, config=config, indices=[index]
    )[0]
