"""Word-level corpora for the recurrent cells (Penn Treebank, WikiText-2): vocabulary and batches.

A corpus folder holds `train.txt`, `valid.txt` and `test.txt` (Mikolov's PTB files, also
accepted as `ptb.train.txt` ...; WikiText-2's `wiki.train.tokens` ...). Every line ends
with `<eos>`, as in the original (quark0/darts rnn/data.py). The vocabulary is built from
the training text; a word of the validation or test text that training never saw maps to
`<unk>` when the vocabulary has it (PTB and WikiText-2 do) and is an error otherwise.
No TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from darts_tf.errors import CorpusError

EOS, UNK = "<eos>", "<unk>"
NAMES = {
    "train": ("train.txt", "ptb.train.txt", "wiki.train.tokens"),
    "valid": ("valid.txt", "ptb.valid.txt", "wiki.valid.tokens"),
    "test": ("test.txt", "ptb.test.txt", "wiki.test.tokens"),
}


def read_words(path: str) -> list[str]:
    """The file's words, `<eos>` after every line."""
    try:
        with open(path, encoding="utf-8") as handle:
            words = []
            for line in handle:
                words.extend(line.split() + [EOS])
    except OSError as error:
        raise CorpusError(f"cannot read corpus file {path!r}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CorpusError(f"corpus file {path!r} is not UTF-8 text") from None
    if not words:
        raise CorpusError(f"corpus file {path!r} is empty")
    return words


@dataclasses.dataclass
class Corpus:
    """Token ids of the three splits and the vocabulary (`words[i]` is id i, in order of first use in train)."""

    words: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    description: str = ""

    def __len__(self) -> int:
        return len(self.words)


def _vocabulary(words: list[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for word in words:
        if word not in index:
            index[word] = len(index)
    return index


def word_ids(words: list[str], index: dict[str, int], where: str) -> np.ndarray:
    """The ids of `words` in the vocabulary `index` (word -> id); unknown words are `<unk>`'s id when it has one,
    else a CorpusError naming the word and `where` they come from."""
    unk = index.get(UNK)
    ids = np.empty(len(words), dtype=np.int32)
    for position, word in enumerate(words):
        token = index.get(word, unk)
        if token is None:
            raise CorpusError(f"{where}: word {word!r} is not in the training vocabulary and the corpus has no {UNK}")
        ids[position] = token
    return ids


def corpus_from_words(
    train: list[str], valid: list[str], test: list[str], names=("train", "valid", "test"), description=""
):
    """A `Corpus` from word lists (the vocabulary from `train`)."""
    index = _vocabulary(train)
    return Corpus(
        words=list(index),
        train=word_ids(train, index, names[0]),
        valid=word_ids(valid, index, names[1]),
        test=word_ids(test, index, names[2]),
        description=description,
    )


def find_split(folder: str, split: str) -> str | None:
    """The path of `split`'s file ("train", "valid" or "test") in a corpus folder, or None."""
    for name in NAMES[split]:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def split_ids(folder: str, split: str, index: dict[str, int]) -> tuple[np.ndarray, str]:
    """(ids, path) of `split`'s text in the corpus folder `folder`, read in the vocabulary `index` (`word_ids`);
    a CorpusError naming the folder when it is none or has no such file."""
    if not os.path.isdir(folder):
        raise CorpusError(f"`data_dir` {folder!r} is not a folder")
    path = find_split(folder, split)
    if path is None:
        raise CorpusError(f"`data_dir` {folder!r} has no {split} file (expected {' / '.join(NAMES[split])})")
    return word_ids(read_words(path), index, path), path


def load_corpus(folder: str, train_portion: float | None = None) -> Corpus:
    """The corpus in `folder`.

    Without a training file (the shared PTB sample holds only `ptb.valid.txt` and
    `ptb.test.txt`), `train_portion` splits the validation text: its first
    `train_portion` of the lines train, the rest validate; test stays test.
    """
    if not os.path.isdir(folder):
        raise CorpusError(f"`data_dir` {folder!r} is not a folder")
    paths = {split: find_split(folder, split) for split in NAMES}
    if paths["test"] is None or paths["valid"] is None:
        missing = [split for split in ("valid", "test") if paths[split] is None]
        raise CorpusError(
            f"`data_dir` {folder!r} has no {' or '.join(missing)} file (expected {' / '.join(NAMES[missing[0]])})"
        )
    if paths["train"] is not None and train_portion is None:
        return corpus_from_words(
            read_words(paths["train"]), read_words(paths["valid"]), read_words(paths["test"]),
            names=[paths[s] for s in ("train", "valid", "test")], description=f"word corpus at {folder}",
        )  # fmt: skip
    if train_portion is None:
        raise CorpusError(
            f"`data_dir` {folder!r} has no training file ({' / '.join(NAMES['train'])}); "
            "`train_portion` P trains on the first part of the validation text"
        )
    if not 0.0 < train_portion < 1.0:
        raise CorpusError(f"`train_portion` must be in (0, 1). Received: {train_portion}")
    with open(paths["valid"], encoding="utf-8") as handle:
        lines = handle.readlines()
    cut = int(len(lines) * train_portion)
    split = lambda part: [w for line in part for w in line.split() + [EOS]]  # noqa: E731
    return corpus_from_words(
        split(lines[:cut]), split(lines[cut:]), read_words(paths["test"]),
        names=(f"{paths['valid']} (first {cut} lines)", f"{paths['valid']} (the rest)", paths["test"]),
        description=f"{paths['valid']}: {cut} lines train, {len(lines) - cut} validate; test {paths['test']}",
    )  # fmt: skip


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """[steps, batch_size] time-major columns of consecutive text, as the original's `batchify` (tail dropped)."""
    steps = len(ids) // batch_size
    if steps < 2:
        raise CorpusError(f"{len(ids)} tokens are too few for batch size {batch_size}")
    return np.ascontiguousarray(np.asarray(ids[: steps * batch_size]).reshape(batch_size, steps).T)


def get_batch(source: np.ndarray, i: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) [seq_len', batch] from row i; targets are the next tokens (seq_len' <= seq_len)."""
    seq_len = min(seq_len, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]


def sequence_lengths(rng: np.random.Generator, total: int, bptt: int, vary: bool, max_delta: int = 20) -> list[int]:
    """The truncated-BPTT lengths of one epoch over `total` rows, as the original draws them.

    bptt with probability 0.95, else bptt / 2; with `vary` (train.py) a normal around it
    (std 5, at least 5, at most bptt + max_delta); without (train_search.py) the length itself.
    """
    lengths, i = [], 0
    while i < total - 1 - 1:
        base = bptt if rng.random() < 0.95 else bptt / 2.0
        seq_len = min(max(5, int(rng.normal(base, 5))), bptt + max_delta) if vary else int(base)
        lengths.append(seq_len)
        i += seq_len
    return lengths
