"""Kept for imports written before the batch stage moved into the core: see
:mod:`asrhub.engine.batch_stage` (the stage) and :mod:`asrhub.engine.failover` (failover, ``checked``)."""

from asrhub.engine.batch_stage import PartialFn, batch_stage, final_event
from asrhub.engine.failover import checked

__all__ = ["PartialFn", "batch_stage", "checked", "final_event"]
