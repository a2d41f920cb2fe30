"""The DARTS convolutional search space (Liu, Simonyan & Yang, ICLR 2019, arXiv:1806.09055, Sec. 2.1).

- `genotypes`: the primitives, `Genotype` and the published cells, derivation from the alphas
  (NumPy only).
- `ops`: the candidate operations as Keras layers, with PyTorch's numerics.
- `search_model`: `MixedOp`, `SearchCell`, `SearchNetwork` (the relaxed network the search trains).
- `eval_model`: `NetworkCIFAR`, `NetworkImageNet` (the network built from a genotype).
- `search`: `ArchitectureSearch` (the bilevel `train_step`) and the search run (`run_search`).
- `train`: `EvalTrainer` and the evaluation network's training run (`run_training`).
- `pytorch`: the original's PyTorch parameter names and weights, both ways.

Importing this package imports no TensorFlow.
"""
