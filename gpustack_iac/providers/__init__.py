"""Backends: one module per cloud or host kind; Python dynamic providers live here so dill pickles them by reference."""
