"""darts_tf.data.corpus: word corpora (the recurrent space's data), vocabulary, batches, sequence lengths."""

import os

import numpy as np
import pytest

from darts_tf.data import corpus as text
from rnn_helpers import corpus_folder


def test_corpus_vocabulary_unknown_words_and_batches(tmp_path):
    corpus = text.load_corpus(corpus_folder(tmp_path / "c"))
    assert corpus.words[0] != "<eos>" and "<eos>" in corpus.words and len(corpus) == 42
    folder = corpus_folder(tmp_path / "u")
    with open(os.path.join(folder, "test.txt"), "a", encoding="utf-8") as handle:
        handle.write(" zebra \n")
    unk = text.load_corpus(folder)
    assert unk.test[-2] == unk.words.index("<unk>")  # ... zebra <eos>
    bare = corpus_folder(tmp_path / "n", unk=False)
    with open(os.path.join(bare, "valid.txt"), "a", encoding="utf-8") as handle:
        handle.write(" zebra \n")
    with pytest.raises(text.CorpusError, match="word 'zebra' is not in the training vocabulary"):
        text.load_corpus(bare)
    with pytest.raises(text.CorpusError, match="has no training file"):
        text.load_corpus(corpus_folder(tmp_path / "v", with_train=False))
    split = text.load_corpus(corpus_folder(tmp_path / "v2", with_train=False), train_portion=0.75)
    assert len(split.train) > 2 * len(split.valid)
    source = text.batchify(np.arange(23), 4)  # 5 rows x 4 columns of consecutive text, tail dropped
    np.testing.assert_array_equal(source[:, 1], np.arange(5, 10))
    inputs, targets = text.get_batch(source, 3, 35)
    assert inputs.shape == (1, 4) and targets[0, 0] == 4


def test_sequence_lengths_are_the_originals_draws():
    lengths = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=False)
    assert set(lengths) <= {35, 17} and sum(lengths) >= 10_000 - 2
    again = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=False)
    assert lengths == again
    varied = text.sequence_lengths(np.random.default_rng(0), 10_000, 35, vary=True)
    assert min(varied) >= 5 and max(varied) <= 55 and len(set(varied)) > 10
