"""The DARTS recurrent search space (Liu, Simonyan & Yang, ICLR 2019, arXiv:1806.09055, Sec. 3.1.2).

- `genotypes`: the activations, `RecurrentGenotype` and the published cells, derivation (NumPy only).
- `model`: `RecurrentCell` and `RNNModel` (the language model; the search model without a genotype).
- `bptt`: the discrete cell's training pass with its backward pass written out (weight gradients over time).
- `architect`: the original's recurrent architecture gradients, first and second order.
- `lm`: what the runs share: an epoch's batches, the weight step's loss, evaluation, perplexity.
- `search`: `RecurrentSearch` (the bilevel `train_step`) and the search run (`run_rnn_search`).
- `train`: `LanguageModelTrainer` (SGD, then averaged SGD) and the training run (`run_rnn_training`).
- `export`: the language model's SavedModel; `pytorch`: the original's state-dict names.

The word corpora are `darts_tf.data.corpus`. Importing this package imports no TensorFlow.
"""
