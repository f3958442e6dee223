"""gRPC through the door: every call is admitted before its request message is read.

grpcio reads (and deserialises) a unary call's request before its handler runs, and caps a
message only server-wide. :class:`DoorInterceptor` (a ``grpc.aio.ServerInterceptor``, which
runs when a call's headers arrive) therefore hands grpcio a *request-streaming* handler for
every protected method: grpcio then reads nothing until the handler asks for it, and the
handler asks only after the door said yes:

1. the key from the call's metadata (``authorization: Bearer KEY`` or ``x-goog-api-key``) —
   missing or wrong: ``UNAUTHENTICATED``, and the request's bytes stay in HTTP/2's 64 KiB
   stream window (never in the hub's memory, whatever their size);
2. the gate: the call counts as one connection of its peer's address (``server.max_connections``,
   ``server.max_connections_per_address``) — at a cap: ``RESOURCE_EXHAUSTED``;
3. then the request is read: a unary method's one message (up to ``server.max_upload_bytes``: a
   ``Recognize`` carries a file) is handed to its handler as grpcio would have; a streaming
   method's messages are checked one by one — a frame over its method's limit
   (``StreamingRecognize``: twice ``limits.max_frame_bytes``, as on the WebSocket) or one that
   does not parse is a ``too_large`` / ``bad_message`` :class:`~asrhub.errors.HubError` raised
   from the request iterator, which the handler answers with its status (:data:`STATUS`).

grpcio cannot cap one method's messages below another's before it has read them (its limit is
server-wide: the upload size); the per-method frame limit therefore holds after the read, for
callers that passed the door, and ``grpc.max_concurrent_streams`` / ``maximum_concurrent_rpcs``
bound how many such reads run at once.

The caller's identity reaches the handler in :data:`CALLER` (a context variable of the call's
task; the same one every door sets, :data:`asrhub.usage.CALLER`). Each admitted call counts as
one request of its key (:mod:`asrhub.usage`); a call to a ``metered`` service (Speech) by a key
that has used its daily audio quota is refused ``RESOURCE_EXHAUSTED`` before its request is
read. Health and reflection need no key, like ``/healthz``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, TypeAlias

import grpc

from asrhub.door import Door, Ticket
from asrhub.errors import HubError
from asrhub.usage import CALLER, UsageMeter

__all__ = ["CALLER", "STATUS", "DoorInterceptor"]

STATUS: dict[str, grpc.StatusCode] = {
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "capacity": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "quota_exceeded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "slow_consumer": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_large": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_message": grpc.StatusCode.INVALID_ARGUMENT,
    "bad_audio": grpc.StatusCode.INVALID_ARGUMENT,
    "unknown_provider": grpc.StatusCode.INVALID_ARGUMENT,
    "timeout": grpc.StatusCode.OUT_OF_RANGE,  # Google's "audio timeout": no audio for too long
    "provider_failed": grpc.StatusCode.INTERNAL,
    "shutdown": grpc.StatusCode.UNAVAILABLE,
}
"""gRPC's refusal table: hub error code → status (anything else: ``INTERNAL``)."""


def presented_key(metadata: Iterable[Any] | None) -> str | None:
    """The API key of a call: ``authorization: Bearer KEY`` or ``x-goog-api-key: KEY``."""
    found = {str(m.key).lower(): m.value for m in metadata or ()}
    scheme, _, value = str(found.get("authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = found.get("x-goog-api-key")
    return str(key).strip() or None if key else None


def peer_address(peer: str) -> str | None:
    """The address part of grpcio's ``context.peer()`` (``ipv4:127.0.0.1:5000``,
    ``ipv6:[::1]:5000``); None for anything else (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


class Unreadable:
    """What a guarded deserializer returns for a message it refuses (too large, malformed):
    the request iterator turns it into a :class:`HubError`, so nothing raises inside grpcio."""

    __slots__ = ("error",)

    def __init__(self, error: HubError) -> None:
        self.error = error


def guarded(deserialize: Callable[[bytes], Any] | None, limit: int | None) -> Callable[[bytes], Any]:
    def load(data: bytes) -> Any:
        if limit is not None and len(data) > limit:
            return Unreadable(
                HubError("too_large", f"a message of {len(data)} bytes exceeds the limit of {limit}")
            )
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError and friends: the client's fault
            return Unreadable(HubError("bad_message", f"the request does not parse ({type(exc).__name__})"))

    return load


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Unreadable):
            raise request.error
        yield request


Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class DoorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        door: Door,
        *,
        protected: Collection[str],
        frame_limits: Mapping[str, int] | None = None,
        usage: UsageMeter | None = None,
        metered: Collection[str] = (),
    ) -> None:
        self.door = door
        self.usage = usage
        """Counts each admitted call against its key (None: not counted)."""
        self.metered = frozenset(metered)
        """Services refused to a key past its daily audio quota (full names)."""
        self.protected = frozenset(protected)
        """Services whose calls pass the door (full names); others (health, reflection) are open."""
        self.frame_limits = dict(frame_limits or {})
        """Method path (``/pkg.Service/Method``) → the largest message one of its requests may be."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.split("/")[1] not in self.protected:
            return handler
        try:
            key = self.door.identify(presented_key(details.invocation_metadata))
        except HubError as exc:
            return _refusing(handler, STATUS[exc.code], exc.message)
        if self.usage is not None:
            self.usage.request(key)
            if method.split("/")[1] in self.metered:
                try:
                    self.usage.check(key)
                except HubError as exc:
                    return _refusing(handler, STATUS[exc.code], exc.message)
        return self._admitting(handler, key, self.frame_limits.get(method))

    def _enter(self, context: Context) -> Ticket:
        return self.door.gate.enter(peer_address(context.peer()), "grpc")

    def _admitting(
        self, handler: grpc.RpcMethodHandler, key: str | None, limit: int | None
    ) -> grpc.RpcMethodHandler:
        load = guarded(handler.request_deserializer, limit)
        serialize = handler.response_serializer
        enter = self._enter
        if handler.request_streaming and handler.response_streaming:
            inner_stream = handler.stream_stream

            async def stream_stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
                CALLER.set(key)
                ticket = await _admitted(enter, context)
                try:
                    async for response in inner_stream(_checked(requests), context):
                        yield response
                finally:
                    ticket.leave()

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, request_deserializer=load, response_serializer=serialize
            )
        if handler.request_streaming or handler.response_streaming:
            raise NotImplementedError(f"no door for a {handler!r}")  # the hub serves no such method
        inner_unary = handler.unary_unary

        async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
            CALLER.set(key)
            ticket = await _admitted(enter, context)
            try:
                request = await anext(aiter(requests), None)
                if request is None:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the call carried no request")
                if isinstance(request, Unreadable):
                    await context.abort(STATUS[request.error.code], request.error.message)
                return await inner_unary(request, context)
            finally:
                ticket.leave()

        return grpc.stream_unary_rpc_method_handler(
            unary, request_deserializer=load, response_serializer=serialize
        )


async def _admitted(enter: Callable[[Context], Ticket], context: Context) -> Ticket:
    try:
        return enter(context)
    except HubError as exc:
        await context.abort(STATUS[exc.code], exc.message)
        raise  # not reached: abort raises


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that ends the call with ``code`` before reading anything it sent."""
    serialize = handler.response_serializer
    if handler.response_streaming:

        async def refuse_stream(_requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            await context.abort(code, message)
            yield None  # not reached: abort raises

        return grpc.stream_stream_rpc_method_handler(refuse_stream, response_serializer=serialize)

    async def refuse(_requests: AsyncIterator[Any], context: Context) -> Any:
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=serialize)
