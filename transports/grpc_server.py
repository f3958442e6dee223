"""The hub's gRPC server (``server.grpc_port``): Google Cloud Speech v1, long-running
operations, health and reflection, on grpcio's asyncio server in the hub's process and event loop.

* ``google.cloud.speech.v1.Speech`` (:mod:`~asrhub.transports.grpc_speech`). The
  ``google-cloud-speech`` package ships the request and response messages (proto-plus classes
  that serialise themselves) but no servicer base class, so the three RPCs are registered with a
  generic handler under their real method paths; any Google Speech v1 client works unchanged.
* ``google.longrunning.Operations`` (:mod:`~asrhub.transports.grpc_operations`, the generated
  servicer of googleapis-common-protos): what ``LongRunningRecognize``'s clients poll.
* ``grpc.health.v1.Health`` (grpcio-health-checking): ``SERVING`` for ``""``, the Speech and the
  Operations services while the hub accepts sessions, ``NOT_SERVING`` from the start of a shutdown.
* server reflection (grpcio-reflection) for the four services, so ``grpcurl`` and friends can
  list and describe them. The Speech messages come from the package's descriptor; the service
  itself is not in it, so :func:`_register_service_descriptor` adds a descriptor of the three
  served methods to the default pool, built from those message descriptors.

Admission (:mod:`~asrhub.transports.grpc_door`): a :class:`~asrhub.transports.grpc_door
.DoorInterceptor` checks every Speech and Operations call's key and the gate's connection caps
before its request is read. Bounds: a request message may be up to ``server.max_upload_bytes``
(a ``Recognize`` carries a whole file), a ``StreamingRecognize`` frame up to twice
``limits.max_frame_bytes`` (as a WebSocket frame); ``grpc.max_concurrent_streams`` per
connection and ``maximum_concurrent_rpcs`` in total follow ``server.max_connections_per_address``
and ``server.max_connections``; an HTTP/2 handshake must complete within
``limits.start_timeout_s`` and a connection with no call is closed after
``limits.idle_timeout_s``. HTTP/2's receive window stays at its 64 KiB default per stream (BDP
probing off), so a stream whose session is busy holds at most that much of its client's audio
here. Health and reflection need no key, like ``/healthz``.
"""

from __future__ import annotations

import asyncio

import grpc
from google.cloud import speech_v1
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asrhub.door import Door
from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.settings.schema import Settings

from .common import ListenError
from .grpc_door import DoorInterceptor
from .grpc_operations import MAX_RUNNING
from .grpc_operations import SERVICE as OPERATIONS
from .grpc_speech import SERVICE, SpeechService

log = get_logger("asrhub.server")

OVERALL = ""


def _register_service_descriptor() -> None:
    """Describe ``google.cloud.speech.v1.Speech`` (the methods served) in the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(SERVICE)
        return
    except KeyError:
        pass
    messages = speech_v1.RecognizeRequest.pb().DESCRIPTOR.file
    proto = descriptor_pb2.FileDescriptorProto(
        name="asrhub/google_cloud_speech_v1_service.proto",
        package="google.cloud.speech.v1",
        syntax="proto3",
        dependency=[messages.name, operations_pb2.DESCRIPTOR.name],
    )
    service = proto.service.add(name="Speech")
    service.method.add(
        name="Recognize",
        input_type=".google.cloud.speech.v1.RecognizeRequest",
        output_type=".google.cloud.speech.v1.RecognizeResponse",
    )
    service.method.add(
        name="LongRunningRecognize",
        input_type=".google.cloud.speech.v1.LongRunningRecognizeRequest",
        output_type=".google.longrunning.Operation",
    )
    service.method.add(
        name="StreamingRecognize",
        input_type=".google.cloud.speech.v1.StreamingRecognizeRequest",
        output_type=".google.cloud.speech.v1.StreamingRecognizeResponse",
        client_streaming=True,
        server_streaming=True,
    )
    pool.Add(proto)


DEFAULT_STREAMS = 1000
"""``grpc.max_concurrent_streams`` when the per-address cap is off (grpcio's own is unbounded)."""
MESSAGE_OVERHEAD = 1 << 20
"""Room for a request's other fields (its config) next to a file's audio."""
FRAME_OVERHEAD = 4096
"""Room for a streaming request's framing next to its audio."""
STREAMING = f"/{SERVICE}/StreamingRecognize"


class GrpcServer:
    def __init__(
        self,
        hub: Hub,
        door: Door,
        settings: Settings,
        *,
        reuse_port: bool = False,
        max_operations: int = MAX_RUNNING,
    ) -> None:
        self.hub = hub
        self.port = 0
        self.live_calls = 0
        self._idle = asyncio.Event()
        self._idle.set()
        server, limits = settings.server, settings.limits
        self.speech = SpeechService(
            hub, start_timeout_s=door.start_timeout_s, on_call=self._count, max_operations=max_operations
        )
        self.health = health.aio.HealthServicer()
        door_keeper = DoorInterceptor(
            door,
            protected=(SERVICE, OPERATIONS),
            frame_limits={STREAMING: 2 * limits.max_frame_bytes + FRAME_OVERHEAD},
            usage=hub.usage,
            metered=(SERVICE,),
        )
        self._server = grpc.aio.server(
            interceptors=[door_keeper],
            options=[
                ("grpc.max_receive_message_length", server.max_upload_bytes + MESSAGE_OVERHEAD),
                ("grpc.max_send_message_length", 64 << 20),
                ("grpc.http2.bdp_probe", 0),
                ("grpc.max_concurrent_streams", server.max_connections_per_address or DEFAULT_STREAMS),
                ("grpc.server_handshake_timeout_ms", int(limits.start_timeout_s * 1000)),
                ("grpc.max_connection_idle_ms", int(limits.idle_timeout_s * 1000)),
                # a port in use is an error, not a silent share — unless --workers share it
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ],
            maximum_concurrent_rpcs=server.max_connections or None,
        )
        handlers = {
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self.speech.recognize,
                request_deserializer=speech_v1.RecognizeRequest.deserialize,
                response_serializer=speech_v1.RecognizeResponse.serialize,
            ),
            "LongRunningRecognize": grpc.unary_unary_rpc_method_handler(
                self.speech.long_running_recognize,
                request_deserializer=speech_v1.LongRunningRecognizeRequest.deserialize,
                response_serializer=operations_pb2.Operation.SerializeToString,
            ),
            "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                self.speech.streaming_recognize,
                request_deserializer=speech_v1.StreamingRecognizeRequest.deserialize,
                response_serializer=speech_v1.StreamingRecognizeResponse.serialize,
            ),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        operations_pb2_grpc.add_OperationsServicer_to_server(self.speech.operations, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        _register_service_descriptor()
        names = (SERVICE, OPERATIONS, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._server)

    def _count(self, delta: int) -> None:
        self.live_calls += delta
        if self.live_calls:
            self._idle.clear()
        else:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Returns once no call is in progress."""
        await self._idle.wait()

    async def start(self, host: str, port: int) -> int:
        """Listen (insecure: put TLS in front, as for the HTTP port); returns the bound port."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound: int = self._server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio's way of saying "address in use"
            raise ListenError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not bound:
            raise ListenError(f"cannot listen for gRPC on {address}")
        await self._server.start()
        self.port = bound
        for name in (OVERALL, SERVICE, OPERATIONS):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc listening", host=host, port=bound)
        return bound

    async def stop(self, grace_s: float = 5.0) -> None:
        """After the hub's flush: running operations are cancelled, the calls deliver their
        last finals and end (within ``grace_s``), then the server closes whatever is left."""
        await self.health.enter_graceful_shutdown()
        await self.speech.operations.close()  # they would not survive the process anyway
        if self.live_calls:
            try:
                await asyncio.wait_for(self._idle.wait(), grace_s)
            except TimeoutError:
                log.warning("grpc calls still open after the grace period", calls=self.live_calls)
        await self._server.stop(grace=1.0)
