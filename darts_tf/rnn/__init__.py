"""Recurrent DARTS: the Penn Treebank search space, its language model, search and training."""
