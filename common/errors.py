"""Errors that reach the user as one line: what is wrong and how to fix it."""


class RlreproError(Exception):
    """Base class. `run.py` prints ``error: <message>`` and exits with status 2, with no traceback."""


class ConfigError(RlreproError):
    """A configuration value is impossible (wrong type, out of range, inconsistent with another)."""


class EnvError(RlreproError):
    """An environment cannot be built or rendered (unknown task or camera, missing GL backend)."""


class CheckpointError(RlreproError):
    """A checkpoint or saved buffer is missing, corrupt, or belongs to another run."""


class DatasetError(RlreproError):
    """An offline dataset is missing, unreadable, or was made for another env or split."""


class RunDirError(RlreproError):
    """A run directory cannot be written (disk full, read-only) or another process is writing it."""


class Diverged(RlreproError):
    """Training produced a non-finite loss, action or weight; the run stops at its last finite checkpoint."""
