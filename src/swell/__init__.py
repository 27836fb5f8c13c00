"""swell: a self-hosted event store that speaks Amplitude's APIs."""

from __future__ import annotations

__version__ = "0.1.0"
