"""Where images come from: every data source darts_tf reads, as an in-memory `ImageData`.

`--dataset`: `cifar10` (tensorflow-datasets, the default), `tfds:NAME` (any
tensorflow-datasets image classification dataset), `synthetic` (smoke tests).
`--data-dir` (detected from what is there): CIFAR-10 python batches (a
`cifar-10-batches-py` folder or `cifar-10-python.tar.gz`), CIFAR-100 python
batches (`train`, `test`, `meta`), an image folder tree (`train/<class>/*` and
`test/<class>/*` or `val/<class>/*`: JPEG, PNG, BMP, GIF), or an `.npz` with
`x_train, y_train, x_test, y_test` (and optionally `class_names`). No file is
ever unpickled beyond what CIFAR batches hold (see docs/security.md); images
are decoded by TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile

import numpy as np

from darts_tf.config import DATASETS
from darts_tf.data import images as image_ops
from darts_tf.data.cifar import load_cifar10_python, load_cifar100_python
from darts_tf.data.folders import _resize, _to_channels, load_image_folder
from darts_tf.data.image_data import ImageData, _check_labels, _from_arrays
from darts_tf.data.tfds import load_cifar10_tfds, load_tfds
from darts_tf.errors import DataError
from darts_tf.files import read_npz


def make_synthetic(
    num_train: int = 512, num_test: int = 128, num_classes: int = 10, image_size: int = 32, seed: int = 0
) -> ImageData:
    """Random images with a learnable class signal (a per-class colour pattern), for smoke tests."""
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, size=(num_classes, image_size, image_size, 3))

    def draw(n):
        labels = rng.integers(0, num_classes, size=n).astype(np.int32)
        noise = rng.normal(0, 40, size=(n, image_size, image_size, 3))
        images = np.clip(0.5 * patterns[labels] + 64 + noise, 0, 255).astype(np.uint8)
        return images, labels

    train_images, train_labels = draw(num_train)
    test_images, test_labels = draw(num_test)
    mean = tuple(float(v) for v in train_images.mean(axis=(0, 1, 2)) / 255.0)
    std = tuple(float(v) for v in train_images.std(axis=(0, 1, 2)) / 255.0)
    return ImageData(train_images, train_labels, test_images, test_labels, num_classes, mean, std, "synthetic")


def load_npz(path: str) -> ImageData:
    """`x_train, y_train, x_test, y_test` (uint8 NHWC or NHW images, integer labels), optional `class_names`."""
    try:
        content = read_npz(path)
    except (OSError, ValueError) as error:
        raise DataError(f"`data_dir` {path!r} is not a readable .npz of plain arrays ({error})") from None
    missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in content]
    if missing:
        raise DataError(f"`data_dir` {path!r}: the .npz lacks {', '.join(missing)}")
    images = {}
    for split in ("train", "test"):
        x = content[f"x_{split}"]
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise DataError(
                f"`data_dir` {path!r}: x_{split} must be uint8 images [N, H, W, 1 or 3]. Received: {x.dtype} {x.shape}"
            )
        images[split] = x
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise DataError(
            f"`data_dir` {path!r}: x_train {images['train'].shape} and x_test {images['test'].shape} differ"
        )
    labels = {split: np.asarray(content[f"y_{split}"]).reshape(-1) for split in ("train", "test")}
    if "class_names" in content:
        names = [str(n) for n in content["class_names"].reshape(-1)]
    else:
        names = [str(i) for i in range(int(max(labels["train"].max(initial=0), labels["test"].max(initial=0))) + 1)]
    for split in ("train", "test"):
        labels[split] = _check_labels(labels[split], len(names), f"`data_dir` {path!r} y_{split}")
        if len(labels[split]) != len(images[split]):
            raise DataError(f"`data_dir` {path!r}: {len(images[split])} x_{split} but {len(labels[split])} y_{split}")
    train, test = (images["train"], labels["train"]), (images["test"], labels["test"])
    return _from_arrays(os.path.basename(path), train, test, names, f"NumPy arrays at {path}")


def detect_data_dir(path: str) -> str:
    """What `--data-dir` holds: "cifar10", "cifar100", "folder" or "npz" (DataError naming the layouts otherwise)."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return "npz"
        if tarfile.is_tarfile(path):
            return "cifar10"
    elif os.path.isdir(path):
        if os.path.exists(os.path.join(path, "data_batch_1")) or os.path.isdir(
            os.path.join(path, "cifar-10-batches-py")
        ):
            return "cifar10"
        if all(os.path.isfile(os.path.join(path, name)) for name in ("train", "test", "meta")):
            return "cifar100"
        if os.path.isdir(os.path.join(path, "train")):
            return "folder"
    else:
        raise DataError(
            f"`data_dir` {path!r} does not exist (expected an image folder with train/<class>/*, an .npz, or "
            "CIFAR-10/100 python batches or their .tar.gz)"
        )
    raise DataError(
        f"`data_dir` {path!r} is not a dataset darts_tf reads: expected CIFAR-10 python batches (data_batch_1..5, "
        "test_batch) or their .tar.gz, CIFAR-100 python batches (train, test, meta), an image folder "
        "(train/<class>/*, test/<class>/*) or an .npz (x_train, y_train, x_test, y_test)"
    )


def load_data(
    dataset: str = "cifar10",
    data_dir: str | None = None,
    seed: int = 0,
    image_size: int = 0,
    channels: int = 0,
    tfds_data_dir: str | None = None,
    skip_bad_images: bool = False,
    stream: bool = False,
    cache: str | None = None,
) -> ImageData:
    """The dataset a run asked for: `--data-dir` (detected) wins, else `--dataset` (tfds CIFAR-10 by default).

    `image_size` (square, pixels) and `channels` (1 or 3) convert every source;
    without them the data keeps its own. `stream` and `cache` (image folders only):
    see `load_image_folder`.
    """
    if dataset not in DATASETS and not (dataset.startswith("tfds:") and len(dataset) > 5):
        raise DataError(f"`dataset` {dataset!r} is not supported; expected one of {', '.join(DATASETS)} or tfds:NAME")
    if channels not in (0, 1, 3):
        raise DataError(f"`channels` must be 1 or 3. Received: {channels}")
    if image_size and image_size < 8:
        raise DataError(f"`image_size` must be at least 8 pixels. Received: {image_size}")
    if data_dir:
        kind = detect_data_dir(data_dir)
        if (stream or cache) and kind != "folder":
            raise DataError(f"`stream` and `cache` apply to image folders; `data_dir` {data_dir!r} is {kind}")
        if kind == "folder":
            source = load_image_folder(data_dir, channels, image_size, skip_bad_images, stream, cache)
        else:
            source = {"cifar10": load_cifar10_python, "cifar100": load_cifar100_python, "npz": load_npz}[kind](
                os.path.expanduser(data_dir)
            )
    elif stream or cache:
        raise DataError("`stream` and `cache` apply to image folders (`data_dir` DIR with train/ and test/)")
    elif dataset == "synthetic":
        source = make_synthetic(seed=seed)
    elif dataset.startswith("tfds:"):
        source = load_tfds(dataset[5:], tfds_data_dir)
    else:
        source = load_cifar10_tfds(tfds_data_dir)
    return adapt(source, image_size, channels)


def adapt(source: ImageData, image_size: int = 0, channels: int = 0) -> ImageData:
    """`source` resized to `image_size` and converted to `channels` (statistics recomputed when it changes)."""
    height, width, have = source.input_shape
    if image_ops.is_streamed(source.train_images):  # decoded on the fly: only the target shape changes
        shape = (image_size or height, image_size or width, channels or have)
        train = image_ops.ImageFiles(source.train_images.paths, shape)
        test = image_ops.ImageFiles(source.test_images.paths, shape)
        return dataclasses.replace(source, train_images=train, test_images=test)
    if (not image_size or (height, width) == (image_size, image_size)) and (not channels or channels == have):
        return source
    convert = lambda images: np.stack(  # noqa: E731
        [_resize(_to_channels(image, channels or have), image_size) if image_size else _to_channels(image, channels)
         for image in images]
    )  # fmt: skip
    train, test = convert(source.train_images), convert(source.test_images)
    shape = f"{train.shape[1]}x{train.shape[2]}x{train.shape[3]}"
    return _from_arrays(
        source.name,
        (train, source.train_labels),
        (test, source.test_labels),
        source.class_names,
        f"{source.description}, converted to {shape}",
        source.test_split,
    )
