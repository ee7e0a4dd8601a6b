"""Typed exceptions raised by the solver layer.

Every message names the task or argument at fault, so that the service can
pass it to the caller unchanged.
"""


class SolverError(ValueError):
    """Base class of every error raised by ``solvers``."""


class InvalidInputError(SolverError):
    """An argument has the wrong shape, a non-finite entry or an invalid value."""


class InsufficientDataError(SolverError):
    """A task has too few labels for the requested estimate."""
