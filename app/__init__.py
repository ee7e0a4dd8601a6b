"""prefbudget REST service: studies, pairwise-preference labels, fits and policies."""

__version__ = "0.1.0"
