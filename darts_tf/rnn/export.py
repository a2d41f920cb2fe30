"""SavedModel export of a trained recurrent language model (loadable without darts_tf).

`serving_default` takes `tokens` (int32 [batch, time] word ids) and `state` (float32
[batch, nhid], zeros to start) and returns `log_probs` (float32 [batch, time, vocabulary],
the next word's log-probabilities after each token) and `state` (to feed the next call);
`assets.extra/vocab.txt` holds the words, line i is id i. A network trained under a mixed
policy is served by a float32 copy with its weights (`float32_model`).
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from darts_tf.data import corpus as text
from darts_tf.export import SIGNATURE, ExportError, next_version
from darts_tf.files import atomic_directory
from darts_tf.rnn import lm
from darts_tf.rnn.model import RNNModel, float32_model


def serving_function(model: RNNModel):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="tokens"),
            tf.TensorSpec([None, model.nhid], tf.float32, name="state"),
        ]
    )
    def serve(tokens, state):
        out = model(tf.transpose(tokens), tf.cast(state, model.compute_dtype), training=False)
        log_probs = tf.transpose(tf.cast(out["log_probs"], tf.float32), [1, 0, 2])
        return {"log_probs": log_probs, "state": tf.cast(out["hidden"], tf.float32)}

    return serve


VOCABULARY = os.path.join("assets.extra", "vocab.txt")


def is_language_model(path: str) -> bool:
    """True for a folder `export_language_model` wrote (a SavedModel with its vocabulary)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb")) and os.path.isfile(os.path.join(path, VOCABULARY))


def evaluate_language_model(path: str, data_dir: str, batch_size: int = 1, bptt: int = 35) -> dict:
    """The test perplexity of an exported language model on the test text of the corpus folder `data_dir`, as
    the original's evaluate() computes it (hidden state carried over batches of `bptt` words, `batch_size`
    columns), through the SavedModel alone; words it never saw read as `<unk>`.

    Returns {"words", "loss", "perplexity", "batch_size", "test_file"}.
    """
    if not is_language_model(path):
        raise ExportError(f"{path!r} is not a language model exported by darts_tf (no saved_model.pb and {VOCABULARY})")
    if batch_size <= 0 or bptt <= 0:
        raise ExportError(f"batch size and bptt must be positive. Received: {batch_size}, {bptt}")
    with open(os.path.join(path, VOCABULARY), encoding="utf-8") as handle:
        vocabulary = {word.rstrip("\n"): i for i, word in enumerate(handle)}
    ids, test_file = text.split_ids(data_dir, "test", vocabulary)
    serve = tf.saved_model.load(path).signatures[SIGNATURE]
    nhid = serve.structured_input_signature[1]["state"].shape[-1]

    def step(inputs, targets, state):  # time-major in and out, as `lm.text_loss` steps
        out = serve(tokens=tf.transpose(inputs), state=state)
        picked = tf.gather(out["log_probs"], tf.transpose(targets), axis=-1, batch_dims=2)
        return -tf.reduce_mean(picked), out["state"]

    source = text.batchify(ids, batch_size)
    loss = lm.text_loss(step, source, bptt, tf.zeros([batch_size, nhid]))
    return {"words": int(source.size), "loss": loss, "perplexity": lm.perplexity(loss), "batch_size": batch_size,
            "test_file": test_file}  # fmt: skip


def export_language_model(model: RNNModel, words, base_dir: str, version: int | None = None, overwrite=False) -> str:
    """Exports to `base_dir/<version>/` (the next free version by default), atomically; returns the path."""
    if model.searching:
        raise ExportError("Export needs a trained discrete cell (a genotype), not the search model")
    if len(words) != model.ntoken:
        raise ExportError(f"Export expected {model.ntoken} vocabulary words. Received: {len(words)}")
    model = float32_model(model)
    version = next_version(base_dir) if version is None else int(version)
    target = os.path.join(base_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ExportError(f"{target!r} already exists; choose another `version` or pass `overwrite`")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving_function(model))
    with atomic_directory(target) as tmp:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, "assets.extra", "vocab.txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(f"{word}\n" for word in words))
    return target
