"""How long to wait before trying again: jittered exponential growth up to a cap, reset after a success.

Backoff is the mechanism; each policy is a small class of its own that fixes the numbers
(as psycopg_pool's AttemptWithBackoff does), so a policy is read and tested in one place.
"""

from __future__ import annotations

import random


class Backoff:
    """Delays that grow by `factor` from `first_s` to at most `cap_s`, each jittered by +/- `jitter`."""

    def __init__(
        self,
        *,
        first_s: float,
        factor: float,
        cap_s: float,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < first_s <= cap_s or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < first_s <= cap_s, factor >= 1 and 0 <= jitter < 1")
        self.first_s = first_s
        self.factor = factor
        self.cap_s = cap_s
        self.jitter = jitter
        # Jitter spreads out listeners that lost the same server at the same moment; not security.
        self._rng = rng or random.Random()  # noqa: S311
        self._base = first_s

    def next(self) -> float:
        """The delay to wait now; the one after it grows."""
        spread = 1 + self.jitter * (2 * self._rng.random() - 1)
        delay = min(self._base * spread, self.cap_s)
        self._base = min(self._base * self.factor, self.cap_s)
        return delay

    def reset(self) -> None:
        """Start again from the first delay, after a success."""
        self._base = self.first_s


class ReconnectBackoff(Backoff):
    """The loop's wait after a transient error it could not get past (a lost server, usually).

    Capped so that a listener resumes within 5 s of the server coming back.
    """

    FIRST_S = 0.1
    CAP_S = 4.0

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(first_s=self.FIRST_S, factor=2, cap_s=self.CAP_S, rng=rng)


class BatchRetry(Backoff):
    """A batch in hand, retried soon through transient errors rather than left hidden until its
    visibility timeout; after ATTEMPTS tries it is given back to that timeout."""

    ATTEMPTS = 5
    FIRST_S = 0.05
    CAP_S = 2.0

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__(first_s=self.FIRST_S, factor=3, cap_s=self.CAP_S, rng=rng)
