"""Exceptions shared by every layer. Pure layers raise them; nodes catch them at the edge and hold."""


class DreamVlaError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(DreamVlaError):
    """A configuration file or value is invalid; the message names the key."""


class CheckpointError(DreamVlaError):
    """A model directory is missing, corrupt or does not match what is asked of it."""


class InputError(DreamVlaError):
    """An observation (image, joint state, goal) cannot be trusted; no motion may come from it."""


class EngineError(DreamVlaError):
    """An inference backend is unavailable, mismatched or failed while running."""
