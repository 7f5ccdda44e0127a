"""The error every layer may raise for bad settings or usage (low in the tree, so that the run
folder's code and the experiments share it without importing each other)."""


class ConfigError(ValueError):
    """Bad settings or usage: the CLI prints the one-line message and exits with code 2."""
