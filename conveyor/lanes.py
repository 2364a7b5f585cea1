"""Priority lanes: one queue per level, and which one a worker receives from next.

A worker with a free slot picks among the levels that have work by smooth weighted round
robin (the nginx upstream algorithm): each pick adds every candidate's weight to its
running score, takes the highest, and takes the total off the winner. Over any run of
picks among the same candidates each level gets its weight's share, spread out rather
than in bursts (weights 6:3:1 give H N H L H N H H N H ...), so a high task starts ahead of
a low backlog and low still gets its share under a continuous high load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from conveyor.model import PRIORITIES, Priority

DEFAULT_WEIGHTS = "high=6,normal=3,low=1"


def parse_weights(raw: str) -> dict[Priority, int]:
    """``high=6,normal=3,low=1`` -> weights; levels left out keep their default. Raises
    ValueError naming ``CONVEYOR_PRIORITY_WEIGHTS`` on anything else."""
    weights = dict(_parse(DEFAULT_WEIGHTS))
    weights.update(_parse(raw))
    return weights


def _parse(raw: str) -> Iterable[tuple[Priority, int]]:
    known = ", ".join(p.value for p in PRIORITIES)
    for part in raw.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in {p.value for p in PRIORITIES}:
            raise ValueError(
                f"CONVEYOR_PRIORITY_WEIGHTS: {part.strip()!r} is not level=weight with level one of {known}"
            )
        try:
            weight = int(value.strip())
        except ValueError:
            weight = 0
        if weight < 1 or weight > 1000:
            raise ValueError(
                f"CONVEYOR_PRIORITY_WEIGHTS: the weight of {name} must be a whole number from 1 to 1000,"
                f" not {value.strip()!r}"
            )
        yield Priority(name), weight


class WeightedPicker:
    """Smooth weighted round robin over the levels passed to each ``pick``. Pure: no I/O,
    no clock; the worker passes the levels it believes have work."""

    def __init__(self, weights: Mapping[Priority, int]) -> None:
        self.weights = {p: int(weights.get(p, 1)) for p in PRIORITIES}
        self._score = dict.fromkeys(PRIORITIES, 0)

    def pick(self, candidates: Iterable[Priority]) -> Priority | None:
        """The level to receive from next, of ``candidates``; None when there are none.
        A level that stops being a candidate keeps no credit: when it comes back it starts
        level with the rest, so a long-empty level cannot burst ahead of its weight."""
        wanted = set(candidates)
        present = [p for p in PRIORITIES if p in wanted]
        for p in PRIORITIES:
            if p not in present:
                self._score[p] = 0
        if not present:
            return None
        for p in present:
            self._score[p] += self.weights[p]
        # Ties go to the higher level (PRIORITIES runs high to low; max keeps the first).
        best = max(present, key=lambda p: self._score[p])
        self._score[best] -= sum(self.weights[p] for p in present)
        return best


def derived_queue(queue: str, priority: Priority) -> str:
    """The queue name (or URL) of ``priority`` next to the normal queue ``queue``:
    ``<name>-high`` / ``<name>-low``, the same for a URL's last segment."""
    if priority is Priority.NORMAL:
        return queue
    base = queue.rstrip("/")
    return f"{base}-{priority.value}"
