"""Image folders (`train/<class>/*`, `test/<class>/*` or `val/`): decoded into memory, or streamed
from disk when large, or cached once as arrays."""

from __future__ import annotations

import hashlib
import os
import re

import numpy as np

from darts_tf.data import images as image_ops
from darts_tf.data.image_data import IMAGE_EXTENSIONS, ImageData, _from_arrays, channel_statistics
from darts_tf.errors import DataError
from darts_tf.files import atomic_file, read_npz


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
