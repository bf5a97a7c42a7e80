"""The questions tests ask every platform's sandbox, answered the same way: how often was this order credited?"""

from __future__ import annotations

from typing import Any


class LedgerQueries:
    """Mixed into each sandbox. A sandbox provides ``_state`` (its lock), ``_selected(merchant)`` and
    ``_credits(merchant_state)``: order reference -> every credit recorded for it, oldest first."""

    def _credits(self, merchant: Any) -> dict[str, list[Any]]:
        raise NotImplementedError

    def awards(self, order_number: str, merchant: str | None = None) -> int:
        """How many times this order was credited (1 is the only right answer)."""
        with self._state:
            return sum(len(self._credits(m).get(order_number, ())) for m in self._selected(merchant))

    def total_awards(self, merchant: str | None = None) -> int:
        with self._state:
            return sum(len(credits) for m in self._selected(merchant) for credits in self._credits(m).values())

    def overlaps(self, merchant: str | None = None) -> int:
        """Calls that arrived while another call of the same merchant was in flight (the platform answers 429)."""
        with self._state:
            return sum(m.overlaps for m in self._selected(merchant))

    def double_awards(self, merchant: str | None = None) -> list[str]:
        """Orders credited more than once for the same merchant."""
        with self._state:
            return sorted(
                {ref for m in self._selected(merchant) for ref, credits in self._credits(m).items() if len(credits) > 1}
            )
