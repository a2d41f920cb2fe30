"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020, arXiv:2001.00326) and its table.

- `genotypes`: `Nb201Genotype` (the benchmark's arch string, genotype.json's `{"arch": ...}`),
  its ops and edges, derivation from the alphas (NumPy only).
- `table`: every cell's CIFAR-10 test accuracy from the optional `analog-nasbench` package
  (`darts_tf[bench]`), read without importing it; `score` gives a cell's accuracy and rank.

Importing this package imports no TensorFlow.
"""
