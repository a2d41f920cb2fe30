"""Shared pieces of the recurrent tests: a tiny corpus, a tiny search config, an interruption."""

import os

import keras
import numpy as np

from darts_tf.config import RNNSearchConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def corpus_folder(root, with_train=True, unk=True, seed=0):
    """A tiny word corpus: sentences over a 40-word vocabulary (plus <unk>)."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)] + (["<unk>"] if unk else [])
    os.makedirs(root, exist_ok=True)
    for name, lines in (("train.txt", 300), ("valid.txt", 120), ("test.txt", 80)):
        if name == "train.txt" and not with_train:
            continue
        with open(os.path.join(root, name), "w", encoding="utf-8") as handle:
            for _ in range(lines):
                handle.write(" " + " ".join(rng.choice(words, size=rng.integers(3, 12))) + " \n")
    return str(root)


def search_config(tmp_path, folder, name, **overrides):
    values = dict(data_dir=folder, emsize=16, nhid=16, batch_size=8, bptt=10, epochs=2, eval_batch_size=4, max_steps=4)
    values.update(overrides)
    return RNNSearchConfig(run_dir=str(tmp_path / name), **values)


class Interrupt(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Raises `Interrupt` once epoch `epoch` (1-based) is recorded (the user's callbacks run last)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupt
