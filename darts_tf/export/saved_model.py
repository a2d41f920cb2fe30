"""SavedModel export and serving-side evaluation of evaluation networks.

The exported graph is the logits-only evaluation network (no auxiliary head,
no drop path) behind a `serving_default` signature that takes a batch of
uint8 images [N, H, W, 3] (the training shape), normalises them inside the
graph with the training set's mean/std and returns `logits` and
`probabilities`. It loads with `tf.saved_model.load` and serves with
TensorFlow Serving without darts_tf installed.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import tensorflow as tf

from darts_tf import data
from darts_tf.cnn.eval_model import float32_network, inference_model
from darts_tf.errors import ExportError
from darts_tf.files import atomic_directory

SIGNATURE = "serving_default"


def next_version(base_dir: str) -> int:
    """1 + the largest integer version folder under `base_dir` (TF Serving's layout), or 1."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(name) for name in os.listdir(base_dir) if re.fullmatch(r"\d+", name)]
    return max(versions, default=0) + 1


def serving_function(model: keras.Model, mean, std, image_shape: tuple | None = None, class_names=None):
    """The uint8-in tf.function served as `serving_default`: {"logits", "probabilities", "classes"}.

    "classes" is the top-1 class name (a string) of each image; names default to "0", "1", ...
    """
    network = inference_model(float32_network(model))  # float32 whatever policy trained it
    shape = tuple(image_shape or network.input.shape[1:])
    if len(shape) != 3 or None in shape:
        raise ExportError(f"Export needs a fixed image shape (H, W, C). Received: image_shape={shape}")
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    classes = int(network.output.shape[-1])
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise ExportError(f"Export expected {classes} class names. Received: {len(names)}")

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name="images")])
    def serve(images):
        # Constants made inside the graph (not captured from outside): converters such as tf2onnx
        # would otherwise turn them into inputs.
        mean_t, std_t, names_t = tf.constant(mean), tf.constant(std), tf.constant(names)
        # Signature calls do not check shapes: fail clearly instead of computing on a wrong size.
        images = tf.ensure_shape(images, [None, *shape], name="check_image_shape")
        x = (tf.cast(images, tf.float32) / 255.0 - mean_t) / std_t
        logits = tf.cast(network(x, training=False), tf.float32)
        top = tf.gather(names_t, tf.argmax(logits, axis=-1))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits), "classes": top}

    return network, serve


def export_saved_model(
    model: keras.Model,
    base_dir: str,
    mean,
    std,
    version: int | None = None,
    image_shape: tuple | None = None,
    overwrite: bool = False,
    class_names=None,
) -> str:
    """Exports `model` to `base_dir/<version>/` (next free version by default); returns that path.

    Written into a temporary folder beside it and renamed when complete, so
    a served directory is never half-written.
    """
    version = next_version(base_dir) if version is None else int(version)
    if version <= 0:
        raise ExportError(f"Export version must be a positive integer. Received: version={version}")
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ExportError(f"{target!r} already exists; choose another `version` or pass `overwrite`")
    network, serve = serving_function(model, mean, std, image_shape, class_names)
    archive = keras.export.ExportArchive()
    archive.track(network)
    archive.add_endpoint(SIGNATURE, serve)
    with atomic_directory(target) as tmp:
        archive.write_out(tmp, verbose=False)
        names = class_names if class_names is not None else range(int(network.output.shape[-1]))
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)  # TF Serving's place for side files
        with open(os.path.join(tmp, "assets.extra", "class_names.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{name}\n" for name in names))
    return target


def load_serving_signature(path: str):
    """The `serving_default` function of the SavedModel at `path` (ExportError if there is none)."""
    if not tf.saved_model.contains_saved_model(path):
        raise ExportError(f"No SavedModel at {path!r} (expected saved_model.pb there)")
    loaded = tf.saved_model.load(path)
    if SIGNATURE not in loaded.signatures:
        raise ExportError(f"SavedModel {path!r} has no {SIGNATURE!r} signature")
    return loaded.signatures[SIGNATURE]


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def accuracy_summary(logits: np.ndarray, labels: np.ndarray) -> dict:
    """{"accuracy" (top-1), "top5", "images"} of logits against integer labels."""
    return {
        "accuracy": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, min(5, logits.shape[1])),
        "images": int(len(labels)),
    }


def evaluate_predictor(
    predict, images, labels: np.ndarray, batch_size: int = 256, augmentation: str = "cifar",
    skip_bad_images: bool = False,
) -> dict:  # fmt: skip
    """Top-1/top-5 of `predict` (uint8 NumPy batch -> logits) on uint8 images (arrays or `ImageFiles`).

    Files get the test transform of `augmentation` (see `darts_tf.data.test_dataset`).
    """
    logits, kept = [], []
    for batch, batch_labels in data.test_dataset(images, labels, augmentation, skip_bad_images).batch(batch_size):
        logits.append(np.asarray(predict(batch.numpy())))
        kept.append(batch_labels.numpy())
    return accuracy_summary(np.concatenate(logits), np.concatenate(kept))


def evaluate_saved_model(
    path: str, images, labels: np.ndarray, batch_size: int = 256, augmentation: str = "cifar",
    skip_bad_images: bool = False,
) -> dict:  # fmt: skip
    """Top-1/top-5 accuracy of the SavedModel's `serving_default` on uint8 images (see `evaluate_predictor`)."""
    return evaluate_predictor(saved_model_predictor(path), images, labels, batch_size, augmentation, skip_bad_images)


def saved_model_predictor(path: str):
    """uint8 images [N, H, W, C] -> logits (NumPy) through the SavedModel's `serving_default`."""
    serve = load_serving_signature(path)
    return lambda images: serve(images=tf.constant(images))["logits"].numpy()
