"""The adversary's only view of the victim: encoded images in, encoded images out.

An `Oracle` takes (key, image bytes) requests and yields (key, answer bytes or error) as answers
arrive, in any order; `concurrency` says how many it keeps in flight. The local oracle (victim side)
and the HTTP oracle (an inference API) both fit this, so harvesting cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Iterable, Iterator, Protocol


@dataclass(frozen=True)
class OracleAnswer:
    key: Hashable
    image: bytes | None  # encoded image (PNG) when answered
    error: str | None = None
    latency_s: float = 0.0


class Oracle(Protocol):
    concurrency: int

    def stream(self, requests: Iterable[tuple[Hashable, bytes]]) -> Iterator[OracleAnswer]:
        """Send each (key, encoded image); yield one answer per request as it completes."""
        ...

    def close(self) -> None: ...


class OracleError(RuntimeError):
    """The oracle cannot be reached or refuses all queries (e.g. a bad API key)."""
