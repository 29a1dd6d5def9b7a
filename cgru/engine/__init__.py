"""The models' machinery (tier 3), imported through ``cgru.models``: ``functional`` (the
layer graph, its forward and backward passes), ``sequential`` (a chain of layers, the
one-path graph) and ``trainer`` (compile, fit, evaluate, predict, written once)."""
