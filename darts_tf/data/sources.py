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

import codecs
import dataclasses
import hashlib
import io
import os
import pickle
import re
import socket
import tarfile
from dataclasses import dataclass

import numpy as np

from darts_tf.config import DATASETS
from darts_tf.data import images as image_ops
from darts_tf.errors import DataError
from darts_tf.files import atomic_file, read_npz

CIFAR_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR_STD = (0.24703233, 0.24348505, 0.26158768)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass
class ImageData:
    """An in-memory image classification dataset (uint8 NHWC images, int labels)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple
    name: str
    class_names: tuple = ()  # default: "0", "1", ...
    description: str = ""  # what was read, for the start-up line
    test_split: str = "test"  # the split the test images come from

    def __post_init__(self):
        if not self.class_names:
            self.class_names = tuple(str(i) for i in range(self.num_classes))
        self.class_names = tuple(str(name) for name in self.class_names)
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")
        self.description = self.description or self.name

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_images.shape[1:])


# What the official CIFAR python batches (and CIFAR-100's) are made of: dicts, lists, bytes,
# str and ints, plus NumPy's array reconstruction (written by NumPy 1.x or 2.x, Python 2 or 3).
_RECONSTRUCT, _ = np.zeros(1).__reduce__()[:2]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 bytes written by Python 3
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the types a CIFAR batch holds; any other global is refused before it is looked up."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            message = f"it asks for the global {module}.{name}, which a CIFAR batch never holds"
            raise pickle.UnpicklingError(message) from None


def _unpickle(handle, source: str) -> dict:
    """Reads one CIFAR python batch without running code from it (DataError naming `source` otherwise)."""
    try:
        batch = _RestrictedUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # a corrupt pickle can fail in many ways; none may escape as a traceback
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"refused to read {source!r} as a CIFAR batch: {reason}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{source!r} is not a CIFAR batch: expected a dict, found {type(batch).__name__}")
    return batch


def _batch_arrays(batch: dict, label_key: bytes = b"labels", classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(batch[label_key], dtype=np.int32)
    if labels.shape != (len(images),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= classes:
        raise DataError(f"{len(images)} images need as many labels in 0..{classes - 1}, found shape {labels.shape}")
    return images, labels


def load_cifar10_python(path: str) -> ImageData:
    """Reads CIFAR-10 in the official python-batch format (folder or .tar.gz archive).

    The image count is read from the files (partial copies are fine).
    """
    path = os.path.expanduser(path)
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    batches = {}
    if os.path.isfile(path) and tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():  # read in memory: nothing is extracted to disk
                base = os.path.basename(member.name)
                if member.isfile() and (base in train_names or base == "test_batch"):
                    source = f"{path}:{member.name}"
                    batches[base] = _unpickle(io.BytesIO(archive.extractfile(member).read()), source)
    elif os.path.isdir(path):
        folder = path
        nested = os.path.join(path, "cifar-10-batches-py")
        if not os.path.exists(os.path.join(path, "data_batch_1")) and os.path.isdir(nested):
            folder = nested
        for base in train_names + ["test_batch"]:
            file = os.path.join(folder, base)
            if os.path.exists(file):
                with open(file, "rb") as handle:
                    batches[base] = _unpickle(handle, file)
    else:
        raise DataError(f"`data_dir` {path!r} does not exist (expected a cifar-10-batches-py folder or its .tar.gz)")
    missing = [name for name in train_names + ["test_batch"] if name not in batches]
    if missing:
        raise DataError(f"`data_dir` {path!r} is not CIFAR-10 python batches: missing {', '.join(missing)}")
    try:
        train = [_batch_arrays(batches[name]) for name in train_names]
        test_images, test_labels = _batch_arrays(batches["test_batch"])
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"`data_dir` {path!r}: unreadable CIFAR-10 batch ({error})") from None
    return ImageData(
        train_images=np.concatenate([t[0] for t in train]),
        train_labels=np.concatenate([t[1] for t in train]),
        test_images=test_images,
        test_labels=test_labels,
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        name="cifar10",
        class_names=CIFAR10_CLASSES,
        description=f"CIFAR-10 python batches at {path}",
    )


def _online(host: str = "storage.googleapis.com", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_cifar10_tfds(tfds_data_dir: str | None = None) -> ImageData:
    """CIFAR-10 through tensorflow-datasets, failing in seconds (not minutes) when offline."""
    hint = "pass `data_dir` pointing at CIFAR-10 python batches, or `dataset` synthetic for a smoke test"
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(f"tensorflow-datasets cannot be imported ({error}); {hint}") from None
    builder = tfds.builder("cifar10", data_dir=tfds_data_dir)
    if not builder.is_prepared() and not _online():
        raise DataError(f"CIFAR-10 is not in the tfds cache and the download server is unreachable; {hint}")
    try:
        builder.download_and_prepare()
        train = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, as_supervised=True))
        test = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1, as_supervised=True))
    except Exception as error:  # network and cache failures come in many types
        raise DataError(f"tensorflow-datasets could not load CIFAR-10 ({type(error).__name__}); {hint}") from None
    return ImageData(
        train_images=np.asarray(train[0], np.uint8),
        train_labels=np.asarray(train[1], np.int32),
        test_images=np.asarray(test[0], np.uint8),
        test_labels=np.asarray(test[1], np.int32),
        num_classes=10,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        name="cifar10",
        class_names=CIFAR10_CLASSES,
        description="CIFAR-10 from tensorflow-datasets",
    )


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


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 NHWC images, scaled to [0, 1], in one streaming pass."""
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, channels).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _from_arrays(name, train, test, class_names, description, test_split="test") -> ImageData:
    num_classes = len(class_names)
    mean, std = channel_statistics(train[0])
    return ImageData(
        train[0], train[1], test[0], test[1], num_classes, mean, std, name, tuple(class_names), description, test_split
    )


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array. Received: shape {labels.shape}, {labels.dtype}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels must be in 0..{num_classes - 1}. Received: {labels.min()}..{labels.max()}")
    return labels.astype(np.int32)


def load_cifar100_python(path: str) -> ImageData:
    """CIFAR-100 in the official python format: a folder with `train`, `test` and `meta` (fine labels)."""
    batches = {}
    for base in ("train", "test", "meta"):
        file = os.path.join(path, base)
        with open(file, "rb") as handle:
            batches[base] = _unpickle(handle, file)
    try:
        names = [bytes(n).decode() for n in batches["meta"][b"fine_label_names"]]
        train = _batch_arrays(batches["train"], b"fine_labels", len(names))
        test = _batch_arrays(batches["test"], b"fine_labels", len(names))
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"`data_dir` {path!r}: unreadable CIFAR-100 batch ({error})") from None
    return _from_arrays("cifar100", train, test, names, f"CIFAR-100 python batches at {path}")


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


def _class_folders(root: str) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    return sorted(
        os.path.join(folder, e.name)
        for e in os.scandir(folder)
        if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _folder_files(path: str) -> tuple[list[str], str, dict]:
    """Class names, the test split's name and {split: (paths, labels)}; training files in one fixed shuffled order."""
    test_split = "test" if os.path.isdir(os.path.join(path, "test")) else "val"
    roots = {"train": os.path.join(path, "train"), "test": os.path.join(path, test_split)}
    if not os.path.isdir(roots["test"]):
        raise DataError(f"`data_dir` {path!r}: an image folder needs train/ and test/ (or val/) sub-folders")
    classes = _class_folders(roots["train"])
    test_classes = _class_folders(roots["test"])
    if len(classes) < 2:
        raise DataError(f"`data_dir` {path!r}: train/ must hold at least 2 class folders. Received: {classes}")
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DataError(
            f"`data_dir` {path!r}: train/ and {test_split}/ must hold the same classes; "
            f"only in train: {only_train}, only in {test_split}: {only_test}"
        )
    files = {}
    for split, root in roots.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            found = _image_files(os.path.join(root, name))
            if not found:
                raise DataError(f"`data_dir` {path!r}: class folder {os.path.join(root, name)!r} holds no images")
            paths += found
            labels += [label] * len(found)
        files[split] = (np.array(paths, dtype=str), np.array(labels, np.int32))
    # Files are listed class by class; the training images are put in one fixed mixed order (the same
    # for every run), as CIFAR's batches are: the search's two halves and `--subset` then hold every class.
    order = np.random.default_rng(0).permutation(len(files["train"][1]))
    files["train"] = (files["train"][0][order], files["train"][1][order])
    return classes, test_split, files


def not_an_image(what: str) -> DataError:
    """The one-line error for a file that does not decode (`what`: the quoted path, or a description)."""
    return DataError(f"{what} is not a readable image (`skip_bad_images` skips such files)")


def unreadable_file(error: Exception) -> DataError:
    """`not_an_image` for a decode failure in a tf.data pipeline; names the file when `image_ops.read_image`'s
    check caught it."""
    message = getattr(error, "message", str(error))
    found = re.search(r"not a readable image:\] \[(.*?)\]", message)
    return not_an_image(repr(found.group(1)) if found else f"an image file ({message.strip().splitlines()[0][:200]})")


# Decoded training images above this size are streamed from disk instead of held in memory.
STREAM_ABOVE_BYTES = 4 << 30
# Streamed data: mean/std and the default channel count come from this many training images.
STATISTICS_SAMPLE = 5000


def load_image_folder(
    path: str,
    channels: int = 0,
    image_size: int = 0,
    skip_bad_images: bool = False,
    stream: bool = False,
    cache: str | None = None,
) -> ImageData:
    """An image folder tree: `train/<class>/*` and `test/<class>/*` (or `val/<class>/*`), decoded by TensorFlow.

    Class names are the sorted sub-folder names of `train` (the test split must have the
    same set). The training images come in a fixed shuffled order (not class by class), so
    the search's split into halves and `subset` keep every class. `channels`: 1 or 3
    (default: 3 if any training image has colour, else 1). `image_size`: resize every
    image to that square size (needed when sizes differ, and to stream).

    Held in memory (uint8) unless `stream` is set or the decoded training images would
    exceed `STREAM_ABOVE_BYTES`: then the images stay files (`image_ops.ImageFiles`), decoded
    on the fly by the input pipeline, and mean/std come from `STATISTICS_SAMPLE` of them.
    `cache`: a folder where the decoded images are written once (`.npy`) and read from
    later (memory-mapped), for data too large for memory that is slow to decode.
    """
    classes, test_split, files = _folder_files(path)
    if not stream and not cache:
        if image_size:
            estimate = len(files["train"][1]) * image_size * image_size * (channels or 3)
        else:
            import tensorflow as tf

            try:
                first = tf.io.decode_image(tf.io.read_file(files["train"][0][0]), expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
                if not skip_bad_images:
                    raise not_an_image(repr(str(files["train"][0][0]))) from None
                first = tf.zeros([image_size or 1, image_size or 1, 3])  # the full decode counts and skips it
            estimate = len(files["train"][1]) * int(np.prod(first.shape[:2])) * (channels or 3)
        stream = estimate > STREAM_ABOVE_BYTES
        if stream and not image_size:
            raise DataError(
                f"`data_dir` {path!r} decodes to ~{estimate / 2**30:.0f} GiB, more than is held in memory "
                f"({STREAM_ABOVE_BYTES >> 30} GiB): it streams from disk, which needs `image_size` N"
            )
    if stream or cache:
        if not image_size:
            raise DataError(f"`data_dir` {path!r}: streaming (`stream`, `cache`) needs `image_size` N")
        source = _streamed_folder(path, classes, test_split, files, channels, image_size, skip_bad_images)
        return cache_images(source, cache, skip_bad_images) if cache else source
    return _decoded_folder(path, classes, test_split, files, channels, image_size, skip_bad_images)


def _decoded_folder(path, classes, test_split, files, channels, image_size, skip_bad_images) -> ImageData:
    import tensorflow as tf

    decoded, skipped = {"train": [], "test": []}, 0
    for split, (paths, labels) in files.items():
        for file, label in zip(paths, labels):
            try:
                image = tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
            except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
                if skip_bad_images:
                    skipped += 1
                    continue
                raise not_an_image(repr(str(file))) from None
            decoded[split].append((image, int(label)))
    if not decoded["train"] or not decoded["test"]:
        raise DataError(f"`data_dir` {path!r}: no readable images in train/ or {test_split}/")
    colour = any(image.shape[-1] >= 3 for image, _ in decoded["train"])
    channels = channels or (3 if colour else 1)
    sizes = {tuple(image.shape[:2]) for split in decoded.values() for image, _ in split}
    if not image_size and len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
        raise DataError(f"`data_dir` {path!r}: images of different sizes ({shown}, ...); pass `image_size` N")
    arrays = {}
    for split, items in decoded.items():
        converted = [image_ops.to_channels(image, channels) for image, _ in items]
        if image_size:
            converted = [image_ops.resize_square(image, image_size) for image in converted]
        arrays[split] = (np.stack([image.numpy() for image in converted]), np.array([y for _, y in items], np.int32))
    note = f", {skipped} unreadable files skipped" if skipped else ""
    description = (
        f"image folder at {path}: {len(classes)} classes, {len(arrays['train'][0])} train / "
        f"{len(arrays['test'][0])} {test_split} images{note}"
    )
    return _from_arrays(
        os.path.basename(os.path.normpath(path)), arrays["train"], arrays["test"], classes, description, test_split
    )


def _streamed_folder(path, classes, test_split, files, channels, image_size, skip_bad_images) -> ImageData:
    """The folder as `ImageFiles` (decoded by the input pipeline); channels and mean/std from a sample."""
    import tensorflow as tf

    skipped = 0
    if skip_bad_images:  # drop files that are not images at all (by their first bytes) before counting batches
        for split, (paths, labels) in files.items():
            good = np.array([_has_image_header(path) for path in paths], bool)
            skipped += int((~good).sum())
            files[split] = (paths[good], labels[good])
    sample = files["train"][0][:STATISTICS_SAMPLE]

    def load(file):
        native = image_ops.decode_file(file)
        image = image_ops.to_channels(native, channels or 3)
        return image_ops.resize_square(image, image_size), tf.shape(native)[-1]

    ds = tf.data.Dataset.from_tensor_slices(sample).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if skip_bad_images:
        ds = ds.ignore_errors()
    decoded, natives = [], []
    try:
        for image, native in ds.batch(256).as_numpy_iterator():
            decoded.append(image)
            natives.append(native)
    except tf.errors.InvalidArgumentError as error:
        raise unreadable_file(error) from None
    if not decoded:
        raise DataError(f"`data_dir` {path!r}: no readable images in train/")
    sample_images = np.concatenate(decoded)
    if not channels:
        channels = 3 if np.concatenate(natives).max() >= 3 else 1
        if channels == 1:
            sample_images = sample_images[..., :1]  # grey images were tiled to 3 equal channels
    mean, std = channel_statistics(sample_images)
    shape = (image_size, image_size, channels)
    description = (
        f"image folder at {path}: {len(classes)} classes, {len(files['train'][1])} train / "
        f"{len(files['test'][1])} {test_split} images, streamed from disk at {image_size}x{image_size}x{channels} "
        f"(mean/std of {len(sample_images)} training images)"
        + (f", {skipped} unreadable files skipped" if skipped else "")
    )
    return ImageData(
        image_ops.ImageFiles(files["train"][0], shape), files["train"][1],
        image_ops.ImageFiles(files["test"][0], shape), files["test"][1],
        len(classes), mean, std, os.path.basename(os.path.normpath(path)), tuple(classes), description, test_split,
    )  # fmt: skip


def _has_image_header(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
    except OSError:
        return False
    return any(start.startswith(magic) for magic, _ in image_ops.MAGIC)


def cache_images(source: ImageData, cache_dir: str, skip_bad_images: bool = False) -> ImageData:
    """`source`'s streamed images decoded once into `cache_dir` (`.npy`, memory-mapped when read back).

    The cache files are named by a hash of the file list and the image shape, written
    atomically, and reused by every later run on the same files at the same shape.
    """
    import tensorflow as tf

    os.makedirs(cache_dir, exist_ok=True)
    arrays = {}
    for split, files, labels in (
        ("train", source.train_images, source.train_labels),
        ("test", source.test_images, source.test_labels),
    ):
        digest = hashlib.sha256("\n".join(map(str, files.paths)).encode() + repr(files.image_shape).encode())
        target = os.path.join(cache_dir, f"{source.name}-{split}-{digest.hexdigest()[:16]}.npz")
        if not os.path.exists(target):
            ds = tf.data.Dataset.from_tensor_slices((files.paths, labels))
            shape = files.image_shape
            ds = ds.map(
                lambda file, label, shape=shape: (image_ops.read_resized(file, shape), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            if skip_bad_images:
                ds = ds.ignore_errors()
            with atomic_file(target + ".npy", "wb") as handle:
                kept = _write_npy(handle, ds.batch(256).as_numpy_iterator(), len(files), files.image_shape)
            save_labels = {"labels": kept[1], "count": np.int64(kept[0])}
            with atomic_file(target, "wb") as handle:
                np.savez(handle, **save_labels)
        index = read_npz(target)
        count = int(index["count"])
        arrays[split] = (np.load(target + ".npy", mmap_mode="r")[:count], index["labels"][:count])
    description = f"{source.description.replace('streamed from disk', 'cached')}, cache in {cache_dir}"
    return ImageData(
        arrays["train"][0], arrays["train"][1], arrays["test"][0], arrays["test"][1], source.num_classes,
        source.mean, source.std, source.name, source.class_names, description, source.test_split,
    )  # fmt: skip


def _write_npy(handle, batches, capacity: int, image_shape: tuple) -> tuple[int, np.ndarray]:
    """Writes uint8 image batches into an .npy of `capacity` images at `handle`; (images written, their labels)."""
    import tensorflow as tf

    header = {"descr": "|u1", "fortran_order": False, "shape": (capacity, *image_shape)}
    np.lib.format.write_array_header_1_0(handle, header)
    start = handle.tell()
    labels, count = [], 0
    try:
        for batch, batch_labels in batches:
            handle.write(np.ascontiguousarray(batch, np.uint8).tobytes())
            labels.append(batch_labels)
            count += len(batch)
    except tf.errors.InvalidArgumentError as error:
        raise unreadable_file(error) from None
    handle.truncate(start + capacity * int(np.prod(image_shape)))  # images skipped leave zeros at the end
    return count, np.concatenate(labels).astype(np.int32) if labels else np.zeros(0, np.int32)


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HWC with 1-4 channels -> `channels` (1 or 3), as the streaming pipeline converts."""
    return image_ops.to_channels(image, channels).numpy()


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    return image_ops.resize_square(image, size).numpy()


def load_tfds(name: str, tfds_data_dir: str | None = None) -> ImageData:
    """Any tensorflow-datasets image classification dataset (`image` and a class `label`), in memory.

    The test images come from its `test` split, or `validation` where there is none
    (`ImageData.test_split` says which). Offline and not cached: one line, in seconds.
    """
    hint = "pass `data_dir` with a local copy, or `dataset` synthetic for a smoke test"
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(f"tensorflow-datasets cannot be imported ({error}); {hint}") from None
    try:
        builder = tfds.builder(name, data_dir=tfds_data_dir)
    except Exception as error:  # DatasetNotFoundError and config errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"`dataset` tfds:{name}: not a tensorflow-datasets dataset ({first})") from None
    features = builder.info.features
    image, label = features.get("image") if "image" in features else None, features.get("label")
    if image is None or label is None or not hasattr(label, "names") or str(image.dtype) != "<dtype: 'uint8'>":
        raise DataError(f"`dataset` tfds:{name} is not image classification (needs uint8 'image' and a class 'label')")
    splits = builder.info.splits
    test_split = "test" if "test" in splits else "validation" if "validation" in splits else None
    if "train" not in splits or test_split is None:
        raise DataError(f"`dataset` tfds:{name} needs a train split and a test or validation split")
    if not builder.is_prepared() and not _online():
        raise DataError(f"tfds:{name} is not in the tfds cache and the download server is unreachable; {hint}")
    try:
        builder.download_and_prepare()
        train = tfds.as_numpy(builder.as_dataset(split="train", batch_size=-1, as_supervised=True))
        test = tfds.as_numpy(builder.as_dataset(split=test_split, batch_size=-1, as_supervised=True))
    except Exception as error:  # network and cache failures come in many types
        raise DataError(f"tensorflow-datasets could not load {name} ({type(error).__name__}); {hint}") from None
    arrays = [(np.asarray(x, np.uint8), np.asarray(y, np.int32)) for x, y in (train, test)]
    return _from_arrays(name, arrays[0], arrays[1], label.names, f"tensorflow-datasets {name}", test_split)


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
