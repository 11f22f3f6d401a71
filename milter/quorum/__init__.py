"""Quorum: a multi-engine content-filter milter for Postfix."""

__version__ = "0.1.0"
