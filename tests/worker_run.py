"""Run by tests/test_distribute.py: one process of a tiny search or training, alone or as a TF_CONFIG worker.

python tests/worker_run.py {search,train} STRATEGY RUN_DIR OUT.npz [EPOCHS] [--resume]
writes the final architecture (search) or network (train) variables of this process to OUT.npz.
"""

import sys

from darts_tf import distribute
from darts_tf.runtime import configure

STRATEGY = sys.argv[2]
if STRATEGY == "mirrored":
    distribute.split_cpu(2)
configure("search" if sys.argv[1] == "search" else "training")  # what the commands apply
strategy = distribute.make_strategy(STRATEGY)  # first: a multi-worker strategy must exist before any other op

import keras  # noqa: E402
import numpy as np  # noqa: E402

from darts_tf.cnn.search import run_search  # noqa: E402
from darts_tf.cnn.train import run_training  # noqa: E402
from darts_tf.config import SearchConfig, TrainConfig  # noqa: E402

DATA = dict(dataset="synthetic", subset=64, eval_batch_size=32, strategy=STRATEGY)


class Keep(keras.callbacks.Callback):
    def __init__(self, network, path):
        super().__init__()
        self.network, self.path = network, path

    def on_train_end(self, logs=None):
        np.savez(self.path, *[np.asarray(v.numpy()) for v in self.network()])


def main(kind, run_dir, out, epochs=1, resume=False):
    keep = {}
    if kind == "search":
        sizes = dict(C=4, layers=2, steps=1, multiplier=1)
        config = SearchConfig(epochs=epochs, batch_size=16, run_dir=run_dir, image_size=8, **sizes, **DATA)
        callback = Keep(lambda: keep["model"].network.arch_variables, out)
    else:
        config = TrainConfig(
            epochs=epochs, batch_size=16, C=4, layers=3, drop_path_prob=0.2, cutout=4, run_dir=run_dir, export=False,
            image_size=24, **DATA,
        )  # fmt: skip
        callback = Keep(lambda: keep["model"].network.weights, out)

    class Grab(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            keep["model"] = self.model

    run = run_search if kind == "search" else run_training
    result = run(config, resume=resume, verbose=0, callbacks=[Grab(), callback], strategy=strategy)
    print("done", result["config"].run_dir, flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--resume"]
    main(args[0], args[2], args[3], int(args[4]) if len(args) > 4 else 1, "--resume" in sys.argv)
