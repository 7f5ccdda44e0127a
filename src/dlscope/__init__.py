"""dlscope: a classic deep-learning study (deep vs shallow, optimization, generalization), measured."""

__version__ = "0.1.0"
