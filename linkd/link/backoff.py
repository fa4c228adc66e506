"""Exponential back-off with full jitter, for a link's retries."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter."""

    def __init__(self, base_ms: int, max_ms: int) -> None:
        self.base = base_ms / 1000
        self.max = max_ms / 1000
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.max, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(delay / 2, delay)
