"""Data sets for asyncsnn: event streams, their binning into timesteps, loaders of local copies
of the published data sets, an emulated event camera, and a built-in data set that needs no
download.

>>> from asyncsnn.data import load_dataset
>>> train = load_dataset("digits", train=True)          # doctest: +SKIP
>>> frames, label = train[0]                             # doctest: +SKIP
>>> frames.shape                                         # doctest: +SKIP
torch.Size([30, 2, 16, 16])

Times are in seconds in the API (``dt``) and in integer microseconds inside event arrays.
"""

from .audio import encode_folder, read_wav, write_shd
from .base import EventDataset, FrameDataset
from .cochlea import CochleaParameters, cochlea_channel_frequencies, cochlea_events
from .datasets import CIFAR10, NMNIST, SHD, DVSGesture
from .digits import Digits, EventImageDataset, ImageSetOptions, resize_images, stratified_split
from .emulator import EmulatorConfig, image_to_events, images_to_events, saccade_offsets
from .errors import CorruptDatasetError, DatasetNotFoundError
from .events import (
    AUDIO_EVENT_DTYPE,
    CAMERA_EVENT_DTYPE,
    bin_events,
    downsample_events,
    downsample_sensor_size,
    first_saccade,
    frame_shape,
    make_events,
)
from .external import TonicDataset, from_tonic, load_tonic
from .fsdd import FSDD
from .io import load_pickle_arrays, read_cifar_batch, read_idx, read_mnist, read_nmnist_bin
from .mnist import MNISTSaccades
from .registry import available_datasets, default_data_root, get_dataset_class, load_dataset
from .transforms import Compose, Downsample, FirstSaccade, ToFrames

__all__ = [
    "AUDIO_EVENT_DTYPE",
    "CAMERA_EVENT_DTYPE",
    "CIFAR10",
    "CochleaParameters",
    "Compose",
    "CorruptDatasetError",
    "DVSGesture",
    "DatasetNotFoundError",
    "Digits",
    "Downsample",
    "EmulatorConfig",
    "EventDataset",
    "EventImageDataset",
    "FSDD",
    "ImageSetOptions",
    "FirstSaccade",
    "FrameDataset",
    "MNISTSaccades",
    "NMNIST",
    "SHD",
    "ToFrames",
    "TonicDataset",
    "available_datasets",
    "encode_folder",
    "from_tonic",
    "bin_events",
    "cochlea_channel_frequencies",
    "cochlea_events",
    "default_data_root",
    "downsample_events",
    "downsample_sensor_size",
    "first_saccade",
    "read_wav",
    "write_shd",
    "frame_shape",
    "get_dataset_class",
    "image_to_events",
    "images_to_events",
    "load_dataset",
    "load_tonic",
    "load_pickle_arrays",
    "make_events",
    "read_cifar_batch",
    "read_idx",
    "read_mnist",
    "read_nmnist_bin",
    "resize_images",
    "saccade_offsets",
    "stratified_split",
]
