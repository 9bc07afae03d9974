"""Event streams, binning into timesteps, spatial down-sampling, first saccade, transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsnn.data import (
    AUDIO_EVENT_DTYPE,
    CAMERA_EVENT_DTYPE,
    Compose,
    Downsample,
    FirstSaccade,
    ToFrames,
    bin_events,
    downsample_events,
    downsample_sensor_size,
    first_saccade,
    frame_shape,
    make_events,
)


def camera(*rows: tuple[int, int, int, int]) -> np.ndarray:
    """Camera events from (t_us, x, y, p) rows."""
    t, x, y, p = zip(*rows, strict=True)
    return make_events(t=t, x=x, y=y, p=p)


@pytest.fixture
def stream() -> np.ndarray:
    # sensor 3 wide, 2 high, 2 polarities; dt = 1 ms
    return camera(
        (0, 0, 0, 1),
        (999, 0, 0, 1),
        (1000, 2, 1, 0),
        (1500, 2, 1, 0),
        (2999, 1, 0, 1),
        (3000, 0, 1, 1),
    )


def test_make_events_builds_the_documented_dtypes() -> None:
    ev = make_events(t=[5, 6], x=[1, 2], y=[0, 1], p=[1, 0])
    assert ev.dtype == CAMERA_EVENT_DTYPE
    assert ev["t"].tolist() == [5, 6] and ev["p"].tolist() == [1, 0]
    audio = make_events(t=[5], x=[699])
    assert audio.dtype == AUDIO_EVENT_DTYPE
    assert audio["x"].tolist() == [699]


def test_make_events_rejects_inconsistent_columns() -> None:
    with pytest.raises(ValueError, match="equal length"):
        make_events(t=[1, 2], x=[1])
    with pytest.raises(ValueError, match="both y and p"):
        make_events(t=[1], x=[1], y=[1])


def test_bin_events_counts_per_bin_polarity_row_column(stream: np.ndarray) -> None:
    frames = bin_events(stream, sensor_size=(3, 2, 2), dt=0.001)
    assert frames.dtype == torch.float32
    assert frames.shape == (4, 2, 2, 3)  # T, polarity, rows (y), columns (x)
    expected = torch.zeros(4, 2, 2, 3)
    expected[0, 1, 0, 0] = 2.0  # two ON events at x=0, y=0 in bin 0
    expected[1, 0, 1, 2] = 2.0  # two OFF events at x=2, y=1 in bin 1
    expected[2, 1, 0, 1] = 1.0  # t = 2999 us is still bin 2
    expected[3, 1, 1, 0] = 1.0  # t = 3000 us opens bin 3
    assert torch.equal(frames, expected)


def test_bin_events_window_cuts_and_pads(stream: np.ndarray) -> None:
    short = bin_events(stream, (3, 2, 2), dt=0.001, n_timesteps=2)
    assert short.shape == (2, 2, 2, 3)
    assert short.sum() == 4
    long = bin_events(stream, (3, 2, 2), dt=0.001, n_timesteps=6)
    assert long.shape == (6, 2, 2, 3)
    assert long[4:].sum() == 0 and long.sum() == 6


def test_bin_events_t_start_shifts_the_bins(stream: np.ndarray) -> None:
    frames = bin_events(stream, (3, 2, 2), dt=0.001, t_start=0.001)
    assert frames.shape == (3, 2, 2, 3)
    assert frames[0, 0, 1, 2] == 2.0  # t = 1000, 1500
    assert frames[1, 1, 0, 1] == 1.0  # t = 2999
    assert frames[2, 1, 1, 0] == 1.0  # t = 3000
    assert frames.sum() == 4  # the two events before t_start are left out


def test_bin_events_with_one_polarity_merges_on_and_off() -> None:
    ev = camera((0, 1, 1, 1), (10, 1, 1, 0))
    frames = bin_events(ev, (2, 2, 1), dt=0.001)
    assert frames.shape == (1, 1, 2, 2)
    assert frames[0, 0, 1, 1] == 2.0


@pytest.mark.parametrize("sensor_size", [(700,), (700, 1, 1)])
def test_bin_events_audio_channels(sensor_size: tuple[int, ...]) -> None:
    ev = make_events(t=[100, 200, 10_500], x=[699, 699, 3])
    frames = bin_events(ev, sensor_size, dt=0.01)
    assert frames.shape == (2, 700)
    assert frames[0, 699] == 2.0 and frames[1, 3] == 1.0 and frames.sum() == 3


def test_bin_events_fractional_microsecond_dt() -> None:
    ev = make_events(t=[0, 2, 3, 5], x=[0, 0, 0, 0])
    frames = bin_events(ev, (1,), dt=2.5e-6)  # bins of 2.5 us
    assert frames[:, 0].tolist() == [2.0, 1.0, 1.0]


def test_bin_events_rejects_an_empty_stream() -> None:
    with pytest.raises(ValueError, match="empty event stream"):
        bin_events(np.zeros(0, dtype=CAMERA_EVENT_DTYPE), (3, 2, 2), dt=0.001, n_timesteps=3)


def test_bin_events_rejects_unsorted_timestamps() -> None:
    ev = camera((0, 0, 0, 1), (500, 0, 0, 1), (200, 1, 1, 0))
    with pytest.raises(ValueError, match=r"not sorted: event 2 \(t=200 us\) comes after event 1"):
        bin_events(ev, (3, 2, 2), dt=0.001)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((0, 3, 0, 1), "x=3"),
        ((0, 0, 2, 1), "y=2"),
        ((0, -1, 0, 1), "x=-1"),
        ((0, 0, 0, 2), "p=2"),
    ],
)
def test_bin_events_rejects_coordinates_outside_the_sensor(
    row: tuple[int, int, int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=f"{message}, outside the sensor"):
        bin_events(camera(row), (3, 2, 2), dt=0.001)


def test_bin_events_rejects_channels_outside_the_sensor() -> None:
    with pytest.raises(ValueError, match="x=700, outside the sensor"):
        bin_events(make_events(t=[0], x=[700]), (700,), dt=0.01)


@pytest.mark.parametrize("dt", [0.0, -0.01, float("nan"), float("inf")])
def test_bin_events_rejects_non_positive_dt(stream: np.ndarray, dt: float) -> None:
    with pytest.raises(ValueError, match="dt must be a positive number of seconds"):
        bin_events(stream, (3, 2, 2), dt=dt)


def test_bin_events_rejects_bad_arguments(stream: np.ndarray) -> None:
    with pytest.raises(ValueError, match="n_timesteps"):
        bin_events(stream, (3, 2, 2), dt=0.001, n_timesteps=0)
    with pytest.raises(ValueError, match="before t_start"):
        bin_events(stream, (3, 2, 2), dt=0.001, t_start=1.0)
    with pytest.raises(TypeError, match="structured array"):
        bin_events(np.zeros((3, 4)), (3, 2, 2), dt=0.001)
    with pytest.raises(ValueError, match="width, height, polarities"):
        bin_events(stream, (3, 2), dt=0.001)


def _oracle(events: np.ndarray, shape: tuple[int, int, int], dt_us: int, n: int) -> np.ndarray:
    """Independent reference: one event at a time."""
    out = np.zeros((n, *shape), dtype=np.float32)
    for t, x, y, p in zip(events["t"], events["x"], events["y"], events["p"], strict=True):
        k = int(t) // dt_us
        if k < n:
            out[k, int(p), int(y), int(x)] += 1
    return out


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 50_000),
            st.integers(0, 4),
            st.integers(0, 2),
            st.integers(0, 1),
        ),
        min_size=1,
        max_size=60,
    ),
    dt_us=st.integers(1, 20_000),
    n=st.integers(1, 12),
)
def test_bin_events_matches_a_loop_oracle(
    data: list[tuple[int, int, int, int]], dt_us: int, n: int
) -> None:
    events = camera(*sorted(data))
    frames = bin_events(events, (5, 3, 2), dt=dt_us * 1e-6, n_timesteps=n)
    expected = _oracle(events, (2, 3, 5), dt_us, n)
    np.testing.assert_array_equal(frames.numpy(), expected)
    in_window = int((events["t"] < n * dt_us).sum())
    assert frames.sum().item() == in_window


def test_frame_shape_conventions() -> None:
    assert frame_shape((34, 34, 2)) == (2, 34, 34)
    assert frame_shape((128, 64, 2)) == (2, 64, 128)  # (width, height, p) -> (p, H, W)
    assert frame_shape((700, 1, 1), camera=False) == (700,)
    with pytest.raises(ValueError):
        frame_shape((700, 2, 1), camera=False)


def test_downsample_events_divides_coordinates() -> None:
    ev = camera((0, 127, 127, 1), (1, 3, 4, 0), (2, 64, 33, 1))
    small = downsample_events(ev, 4)
    assert small["x"].tolist() == [31, 0, 16]
    assert small["y"].tolist() == [31, 1, 8]
    assert small["t"].tolist() == [0, 1, 2] and small["p"].tolist() == [1, 0, 1]
    assert ev["x"].tolist() == [127, 3, 64]  # the input is left alone
    assert downsample_sensor_size((128, 128, 2), 4) == (32, 32, 2)
    assert downsample_sensor_size((34, 34, 2), 4) == (9, 9, 2)
    frames = bin_events(small, downsample_sensor_size((128, 128, 2), 4), dt=0.001)
    assert frames.shape == (1, 2, 32, 32) and frames[0, 1, 31, 31] == 1.0


@pytest.mark.parametrize("factor", [0, -2, 1.5])
def test_downsample_rejects_bad_factors(factor: float) -> None:
    with pytest.raises(ValueError, match="factor"):
        downsample_events(camera((0, 1, 1, 1)), factor)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        Downsample(factor)  # type: ignore[arg-type]


def test_first_saccade_keeps_the_first_100_ms() -> None:
    ev = camera((0, 1, 1, 1), (99_999, 1, 1, 0), (100_000, 2, 2, 1), (250_000, 3, 3, 0))
    assert first_saccade(ev)["t"].tolist() == [0, 99_999]
    assert first_saccade(ev, duration=0.2)["t"].tolist() == [0, 99_999, 100_000]
    with pytest.raises(ValueError):
        first_saccade(ev, duration=0.0)


def test_transforms_delegate_to_the_functions(stream: np.ndarray) -> None:
    to_frames = ToFrames((3, 2, 2), dt=0.001, n_timesteps=4)
    assert torch.equal(to_frames(stream), bin_events(stream, (3, 2, 2), 0.001, 4))
    pipeline = Compose([FirstSaccade(0.002), Downsample(2), ToFrames((2, 1, 2), dt=0.001)])
    frames = pipeline(stream)
    # events before 2 ms: (0,0,0,1) x2 -> pixel (0,0); (2,1,0) x2 -> pixel (1,0)
    assert frames.shape == (2, 2, 1, 2)
    assert frames[0, 1, 0, 0] == 2.0 and frames[1, 0, 0, 1] == 2.0 and frames.sum() == 4
    with pytest.raises(ValueError):
        ToFrames((3, 2, 2), dt=-1.0)
    with pytest.raises(ValueError):
        FirstSaccade(-0.1)
