"""Datasets and input pipelines for search and evaluation.

`load_data` (`sources`) reads what a run asks for: CIFAR python batches (`cifar`), image folders
(`folders`), an `.npz` or synthetic images (`sources`), tensorflow-datasets (`tfds`), your own
tf.data.Datasets (`datasets`); each gives an `ImageData` (`image_data`). `pipeline` turns it into
the epochs' batches. `corpus` reads the word corpora of the recurrent space (Penn Treebank).
"""

from darts_tf.config import DATASETS
from darts_tf.data.cifar import load_cifar10_python, load_cifar100_python
from darts_tf.data.datasets import as_image_data, from_datasets
from darts_tf.data.folders import cache_images, load_image_folder, unreadable_file
from darts_tf.data.image_data import CIFAR_MEAN, CIFAR_STD, ImageData, channel_statistics
from darts_tf.data.images import ImageFiles, is_streamed
from darts_tf.data.pipeline import (
    AUGMENTATIONS,
    centre_crop,
    colour_jitter,
    cutout,
    epoch_dataset,
    epochs_dataset,
    evaluation_dataset,
    random_resized_crop,
    split_for_search,
    test_dataset,
)
from darts_tf.data.sources import adapt, detect_data_dir, load_data, load_npz, make_synthetic
from darts_tf.data.tfds import load_cifar10_tfds, load_tfds
from darts_tf.errors import DataError

__all__ = [
    "AUGMENTATIONS",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "DataError",
    "ImageData",
    "ImageFiles",
    "adapt",
    "as_image_data",
    "from_datasets",
    "cache_images",
    "centre_crop",
    "colour_jitter",
    "is_streamed",
    "random_resized_crop",
    "test_dataset",
    "channel_statistics",
    "detect_data_dir",
    "load_cifar100_python",
    "load_image_folder",
    "load_npz",
    "load_tfds",
    "cutout",
    "epoch_dataset",
    "epochs_dataset",
    "evaluation_dataset",
    "load_cifar10_python",
    "load_cifar10_tfds",
    "load_data",
    "make_synthetic",
    "split_for_search",
    "unreadable_file",
]
