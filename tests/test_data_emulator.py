"""The emulated event camera, the image data sets built on it, and the built-in Digits set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from asyncsnn.data import (
    Digits,
    EmulatorConfig,
    EventImageDataset,
    bin_events,
    image_to_events,
    images_to_events,
    load_dataset,
    read_mnist,
    saccade_offsets,
    stratified_split,
)

SENSOR = (16, 16, 2)


def blob_image(size: int = 10) -> np.ndarray:
    """A bright, smooth blob with a darker hole: edges of both signs in every direction."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    return np.clip(1.2 - 0.3 * r, 0, 1) * (r > 1.0)


def bar_image() -> np.ndarray:
    image = np.zeros((8, 8))
    image[:, 3:5] = 1.0  # a vertical bright bar
    return image


def test_saccade_path_is_the_documented_triangle() -> None:
    config = EmulatorConfig(saccade_amplitude=(3.5, 7.0))
    dx, dy = saccade_offsets([0.0, 0.05, 0.1, 0.2, 0.25, 0.3], config)
    np.testing.assert_allclose(dx, [0.0, 0.875, 1.75, 3.5, 1.75, 0.0], atol=1e-9)
    np.testing.assert_allclose(dy, [0.0, 3.5, 7.0, 0.0, 0.0, 0.0], atol=1e-9)
    assert config.duration == pytest.approx(0.3) and config.n_steps == 300


def test_events_are_sorted_of_both_polarities_and_span_three_saccades() -> None:
    events = image_to_events(blob_image(), sensor_size=SENSOR, seed=0)
    assert events.dtype.names == ("t", "x", "y", "p")
    assert len(events) > 100
    assert np.all(np.diff(events["t"]) >= 0)
    assert set(np.unique(events["p"]).tolist()) == {0, 1}
    assert events["x"].min() >= 0 and events["x"].max() < 16
    assert events["y"].min() >= 0 and events["y"].max() < 16
    assert events["t"].min() >= 0 and events["t"].max() < 300_000
    assert events["t"].max() > 280_000  # the third saccade runs to ~300 ms
    per_saccade = np.bincount(events["t"] // 100_000, minlength=3)
    assert per_saccade.shape == (3,) and np.all(per_saccade > 0.15 * len(events))


def test_emulator_is_deterministic_for_a_seed() -> None:
    image = blob_image()
    first = image_to_events(image, sensor_size=SENSOR, seed=3)
    again = image_to_events(image, sensor_size=SENSOR, seed=3)
    other = image_to_events(image, sensor_size=SENSOR, seed=4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)  # another seed: another threshold pattern


def test_batch_conversion_equals_one_by_one_with_noise() -> None:
    config = EmulatorConfig(noise_rate=5.0)
    rng = np.random.default_rng(0)
    images = np.stack([blob_image(), bar_image().repeat(2, 0).repeat(2, 1)[:10, :10]])
    images = np.concatenate([images, rng.uniform(0, 1, (3, 10, 10))])
    ids = [7, 11, 2, 40, 5]
    batch = images_to_events(
        images, sensor_size=SENSOR, seed=1, config=config, indices=ids, chunk_size=2
    )
    for image, index, events in zip(images, ids, batch, strict=True):
        alone = image_to_events(image, sensor_size=SENSOR, seed=1, config=config, index=index)
        assert np.array_equal(events, alone)


def test_a_uniform_or_still_image_gives_no_events() -> None:
    assert len(image_to_events(np.zeros((10, 10)), sensor_size=SENSOR, seed=0)) == 0
    still = EmulatorConfig(saccade_amplitude=(0.0, 0.0))
    assert len(image_to_events(blob_image(), sensor_size=SENSOR, seed=0, config=still)) == 0


def test_on_events_lead_and_off_events_trail_a_moving_bright_bar() -> None:
    # amplitude (4, 0): the bar moves right in saccades 1-2 and back left in saccade 3
    config = EmulatorConfig(saccade_amplitude=(4.0, 0.0), threshold_mismatch=0.0)
    events = image_to_events(bar_image(), sensor_size=SENSOR, seed=0, config=config)
    rightwards = events[events["t"] < 200_000]
    leftwards = events[events["t"] >= 200_000]
    on_x = rightwards["x"][rightwards["p"] == 1].mean()
    off_x = rightwards["x"][rightwards["p"] == 0].mean()
    assert on_x > off_x  # brightening at the leading (right) edge
    on_x = leftwards["x"][leftwards["p"] == 1].mean()
    off_x = leftwards["x"][leftwards["p"] == 0].mean()
    assert on_x < off_x


def test_refractory_period_spaces_a_pixels_events() -> None:
    config = EmulatorConfig(refractory_period=0.005, contrast_threshold=0.05)
    events = image_to_events(blob_image(), sensor_size=SENSOR, seed=0, config=config)
    pixel = events["y"].astype(int) * 16 + events["x"]
    order = np.lexsort((events["t"], pixel))
    same = pixel[order][1:] == pixel[order][:-1]
    gaps = np.diff(events["t"][order])[same]
    assert gaps.size > 0 and gaps.min() >= 4_999  # 5 ms, up to rounding to 1 us


def test_noise_rate_adds_poisson_background_events() -> None:
    config = EmulatorConfig(noise_rate=10.0)
    events = image_to_events(np.zeros((10, 10)), sensor_size=SENSOR, seed=0, config=config)
    expected = 10.0 * 16 * 16 * 0.3  # Hz x pixels x seconds = 768
    assert abs(len(events) - expected) < 5 * np.sqrt(expected)
    assert np.all(np.diff(events["t"]) >= 0)
    assert set(np.unique(events["p"]).tolist()) == {0, 1}


def test_emulator_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="contrast_threshold"):
        EmulatorConfig(contrast_threshold=0.0)
    with pytest.raises(ValueError, match="refractory_period"):
        EmulatorConfig(refractory_period=-1.0)
    with pytest.raises(ValueError, match="saccade_amplitude"):
        EmulatorConfig(saccade_amplitude=(1.0,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating point"):
        image_to_events(np.zeros((4, 4), dtype=np.uint8), sensor_size=SENSOR, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_to_events(np.full((4, 4), 2.0), sensor_size=SENSOR, seed=0)
    with pytest.raises(ValueError, match="width, height, 2"):
        image_to_events(np.zeros((4, 4)), sensor_size=(16, 16, 1), seed=0)


def test_event_image_dataset_bins_converted_images() -> None:
    images = (np.stack([blob_image(), np.zeros((10, 10))]) * 255).astype(np.uint8)
    data = EventImageDataset(images, [3, 1], sensor_size=SENSOR, dt=0.01, seed=0)
    assert len(data) == 2 and data.n_timesteps == 30 and data.frame_shape == (2, 16, 16)
    frames, label = data[0]
    assert label == 3 and frames.shape == (30, 2, 16, 16)
    assert frames.sum().item() == len(data.events(0))  # every event is inside 300 ms
    blank, label = data[1]
    assert label == 1 and blank.shape == (30, 2, 16, 16) and blank.sum() == 0
    eager = EventImageDataset(images, [3, 1], sensor_size=SENSOR, seed=0, precompute=True)
    assert np.array_equal(eager.events(0), data.events(0))
    with pytest.raises(ValueError, match="max_value"):
        EventImageDataset(images.astype(float), [3, 1], sensor_size=SENSOR)
    with pytest.raises(IndexError):
        data[2]


def test_stratified_split_is_fixed_disjoint_and_proportional() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(60))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]
    again = stratified_split(labels, 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


@pytest.fixture(scope="module")
def digits_test() -> Digits:
    return Digits(train=False)


def test_digits_facts_and_split(digits_test: Digits) -> None:
    assert Digits.sensor_size == (16, 16, 2) and Digits.n_classes == 10
    assert len(digits_test) == Digits.n_test == 359
    assert Digits.n_train + Digits.n_test == Digits.n_samples == 1797
    assert np.bincount(digits_test.targets).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    train_idx, test_idx = stratified_split(load_digits().target, 0.2, 0)
    assert np.array_equal(digits_test.indices, test_idx) and len(train_idx) == Digits.n_train
    assert not set(train_idx.tolist()) & set(test_idx.tolist())


def test_digits_samples_are_sparse_event_frames(digits_test: Digits) -> None:
    frames, label = digits_test[0]
    assert frames.shape == (30, 2, 16, 16) and isinstance(label, int)
    assert frames.sum().item() == len(digits_test.events(0))
    counts = np.array([len(digits_test.events(i)) for i in range(len(digits_test))])
    assert counts.min() > 50
    activity = counts.mean() / (30 * 2 * 16 * 16)
    assert 0.01 < activity < 0.08  # a few percent of inputs per bin, as N-MNIST


def test_digits_are_deterministic_and_independent_of_the_split(digits_test: Digits) -> None:
    again = Digits(train=False)
    assert all(np.array_equal(again.events(i), digits_test.events(i)) for i in range(0, 359, 37))
    index = int(digits_test.indices[5])
    image = load_digits().images[index : index + 1]
    alone = EventImageDataset(
        image,
        [0],
        sensor_size=Digits.sensor_size,
        seed=0,
        config=Digits.EMULATOR,
        max_value=16.0,
        image_size=Digits.image_size,
        ids=[index],
    )
    assert np.array_equal(alone.events(0), digits_test.events(5))


def test_load_dataset_digits_uses_its_defaults() -> None:
    data = load_dataset("digits", train=False, dt=0.02)
    assert data.n_timesteps == 15 and data.dt == 0.02
    frames, _ = data[0]
    assert frames.shape == (15, 2, 16, 16)


def test_real_mnist_images_through_the_emulator(shared_data: Path) -> None:
    images, labels = read_mnist(shared_data / "mnist", train=False)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    data = EventImageDataset(images[:4], labels[:4], sensor_size=(34, 34, 2), seed=0)
    frames, label = data[0]
    assert label == 7 and frames.shape == (30, 2, 34, 34)
    events = data.events(0)
    assert set(np.unique(events["p"]).tolist()) == {0, 1}
    assert 500 < len(events) < 20_000 and events["t"].max() > 250_000
    assert frames.sum().item() == len(events)
    binned = bin_events(events, (34, 34, 2), dt=0.01, n_timesteps=30)
    assert (binned.sum(dim=(1, 2, 3)) > 0).all()  # activity in every 10 ms bin
