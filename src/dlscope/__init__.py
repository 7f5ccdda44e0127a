"""dlscope: a classic deep-learning study (deep vs shallow, optimization, generalization), measured."""

import os

# OpenMP threads that spin while waiting make 2-thread torch 10-40x slower on a shared CPU
# (measured: mlp-mid 50 epochs 58 s -> 1.1 s). libgomp reads this when torch loads, so it is set
# before any torch import; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
