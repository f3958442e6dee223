"""The hub's own failures are reported as such: a pipeline that cannot be built from a valid
config is ``internal_error`` (logged), not the client's ``bad_message``."""

from __future__ import annotations

import pytest

from asrhub.config import Limits
from asrhub.errors import HubError
from asrhub.hub import Hub
from asrhub.plugin import Operator, SessionContext


def fake_broken_pipeline(ctx: SessionContext) -> Operator:
    """Fault injection: building the chain fails (a bug in an operator factory, say)."""
    raise RuntimeError("operator factory bug")


def test_a_session_that_cannot_be_built_is_an_internal_error() -> None:
    hub = Hub(providers={}, pipeline_factory=fake_broken_pipeline, limits=Limits())
    with pytest.raises(HubError) as err:
        hub.open({"language": "en"})  # a valid config: not the client's fault
    assert err.value.code == "internal_error" and err.value.fatal
    assert "operator factory bug" in err.value.message
    assert hub.sessions == {}
