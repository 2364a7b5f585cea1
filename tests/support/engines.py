"""An Engine over the memory adapters, for tests of what sits above the ports."""

from __future__ import annotations

from pathlib import Path

from conveyor.clock import SYSTEM, Clock
from conveyor.engine import Engine
from conveyor.memory import MemoryBroker, MemoryFlowLimits, MemoryTaskStore, MemoryWorkerRegistry
from conveyor.model import Priority
from conveyor.ports import Broker
from conveyor.registry import RegistryWatcher
from conveyor.settings import Settings
from tests.conftest import EXAMPLES


def memory_engine(
    settings: Settings,
    tasktypes: Path | str = EXAMPLES,
    clock: Clock | None = None,
    *,
    store: MemoryTaskStore | None = None,
    broker: MemoryBroker | None = None,
    dead_letters: MemoryBroker | None = None,
    workers: MemoryWorkerRegistry | None = None,
    limits: MemoryFlowLimits | None = None,
    visibility_timeout: float = 6.0,
    lanes: bool = False,
) -> Engine:
    """The Engine with a memory task store, broker, dead-letter queue and worker registry
    and flow limits (each replaceable, e.g. to share one between engines), the task types read from
    ``tasktypes``, and the engine and the memory adapters reading time from ``clock`` (one
    clock for all: a store on another clock would expire records the engine just wrote).

    With ``lanes``, the high and low priority levels get a memory queue each (on the same
    clock); without, every level shares ``broker``."""
    clock = clock or SYSTEM
    normal = broker or MemoryBroker(visibility_timeout, clock=clock)
    levels: dict[Priority, Broker] = {Priority.NORMAL: normal}
    if lanes:
        for p in (Priority.HIGH, Priority.LOW):
            levels[p] = MemoryBroker(visibility_timeout, clock=clock, lane=p)
    return Engine(
        settings,
        store or MemoryTaskStore(clock=clock),
        normal,
        dead_letters or MemoryBroker(visibility_timeout, clock=clock),
        RegistryWatcher(tasktypes),
        workers=workers or MemoryWorkerRegistry(clock),
        limits=limits or MemoryFlowLimits(),
        clock=clock,
        lanes=levels,
    )
