"""Kept for imports written before the batch stage moved into the core: see
:mod:`asrhub.batch_stage` (the stage) and :mod:`asrhub.failover` (failover, ``checked``)."""

from asrhub.batch_stage import PartialFn, batch_stage, final_event
from asrhub.failover import checked

__all__ = ["PartialFn", "batch_stage", "checked", "final_event"]
