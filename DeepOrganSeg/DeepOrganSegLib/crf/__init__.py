"""The fully connected 3D CRF: ``parameters`` (torch-free: what a model file stores, what the
CLI and the panel set), ``meanfield`` (mean-field inference, :func:`meanfield.dense_crf`) and
``permutohedral`` (the lattice that filters its appearance kernel). Import the module you need:
this package imports nothing, so the parameters never load PyTorch."""
