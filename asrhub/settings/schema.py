"""The one settings object of a hub process.

Read from a TOML file, then ``ASRHUB_…`` environment variables, then CLI flags (later wins).
See :mod:`asrhub.settings.loader` for the loading rules and ``asrhub config show``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from asrhub.config import Limits, VadEngine, is_fingerprint

EventLoop = Literal["asyncio", "uvloop", "auto"]
"""The event loops a server can run on (``server.loop``)."""


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The HTTP server: address, API keys, browser origins, shutdown."""

    host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` listens on every interface."""
    port: Annotated[int, Meta(ge=0, le=65535)] = 8080
    """TCP port; 0 picks a free one."""
    api_keys: tuple[str, ...] = ()
    """When non-empty, every endpoint but /healthz and the static UI needs one of these keys."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed to connect (CORS / WebSocket Origin). Empty: same origin and
    non-browser clients only; ``*`` allows any."""
    allowed_hosts: tuple[str, ...] = ()
    """Names a request's ``Host`` may carry (any port; ``.example.com`` or ``*.example.com``
    for every subdomain; ``*`` any). Empty: the loopback names (``localhost``, ``127.0.0.1``,
    ``[::1]``) when ``host`` is a loopback address, else any. Another ``Host`` is refused with
    403 on every HTTP route (DNS rebinding; docs/security.md)."""
    max_connections: Annotated[int, Meta(ge=0)] = 8192
    """Connections at once, every protocol together (HTTP port, Engine.IO long-polling
    clients, gRPC calls, Wyoming); one more is refused. 0: no limit."""
    max_connections_per_address: Annotated[int, Meta(ge=0)] = 256
    """Connections at once from one client address (as :attr:`max_connections` counts them);
    one more is refused. 0: no limit — behind a proxy every client has the proxy's address, so
    set 0 there and bound clients at the proxy (deploy/haproxy.cfg does)."""
    shutdown_grace_s: Annotated[float, Meta(ge=0.0)] = 30.0
    """On SIGTERM/SIGINT: how long open sessions get to flush their finals."""
    drain_notice_s: Annotated[float, Meta(ge=0.0, le=300.0)] = 0.0
    """On SIGTERM/SIGINT, before the port closes: this long ``/healthz`` answers 503 and new
    sessions are refused with ``capacity``, so a load balancer's health check takes the node
    out of rotation while it still answers (deploy/: 5 s). 0: the port closes at once."""
    heartbeat_s: Annotated[float, Meta(gt=0.0)] = 20.0
    """Seconds between keep-alive pings on WebSocket and Socket.io connections."""
    max_upload_bytes: Annotated[int, Meta(ge=1024)] = 200 << 20
    """Largest file accepted by the batch endpoints."""
    workers: Annotated[int, Meta(ge=0, le=256)] = 1
    """Processes serving the port (``asrhub serve --workers N``), each with its own event loop
    and sessions; the kernel spreads new connections over them (SO_REUSEPORT). 0: one per CPU
    core. With more than one, limits and resume span the workers only with
    ``cluster.redis_url`` set (see docs/cluster.md)."""
    loop: EventLoop = "asyncio"
    """The event loop of the server process (and of each worker): ``asyncio`` (the standard
    library's) or ``uvloop`` (libuv; the ``uvloop`` extra: ``pip install 'asrhub[uvloop]'``),
    which fails at start-up where it cannot import; ``auto``: uvloop where it imports, else the
    standard loop. Side by side under the scale load uvloop used no less CPU and, overloaded,
    left connections unaccepted (docs/benchmarks.md, "The event loop"), so it is not the default."""
    receive_buffer_bytes: Annotated[int, Meta(ge=0)] = 128 << 10
    """Kernel receive buffer of every connection (set on the listening socket, so the TCP
    window is sized from the first packet). Bounds what a client can push past a busy session:
    128 KiB is 4 s of 16 kHz PCM16. Also bounds a file upload to this much per round trip
    (2.6 MB/s at 50 ms); raise it for big uploads over long links. 0: Linux autotuning (MBs)."""
    grpc_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    """Port of the gRPC server (Google Cloud Speech v1, health, reflection) on ``host``; 0: off."""
    wyoming_port: Annotated[int, Meta(ge=0, le=65535)] = 0
    """Port of the Wyoming server (Home Assistant speech-to-text and wake word) on
    ``wyoming_host``; 0: off."""
    wyoming_host: str = "127.0.0.1"
    """Address of the Wyoming server, apart from ``host``: Wyoming has no authentication, so
    exposing the HTTP port with API keys does not expose it."""
    wyoming_unauthenticated: bool = False
    """Required (and logged) to start Wyoming on a non-loopback ``wyoming_host`` while
    ``api_keys`` are set: every client that reaches the port is then served without a key."""
    wyoming_max_sessions: Annotated[int, Meta(ge=1)] = 16
    """Wyoming sessions at once (one more gets a ``capacity`` error event), so keyless Wyoming
    clients cannot take the sessions of ``limits.max_sessions`` from keyed ones."""
    wyoming_zeroconf: bool = False
    """Advertise the Wyoming server on the local network (mDNS ``_wyoming._tcp``) so Home
    Assistant discovers it; needs the ``zeroconf`` extra (``pip install asrhub[zeroconf]``)."""
    fetch_urls: bool = False
    """Deepgram pre-recorded ``POST /v1/listen`` with ``{"url": …}``: fetch the audio from that
    http(s) URL (up to ``max_upload_bytes``, 60 s). Off: refused with 400. Turn it on only where
    clients may make the hub reach any address it can (the hub fetches what they name)."""


class VadSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    engine: VadEngine = "webrtc"
    """The VAD engine of sessions whose config names none (``vad.engine``): ``webrtc`` (webrtcvad)
    or ``silero`` (Silero VAD v5; its model is then loaded at start-up, and a missing model stops
    the start with the set-up hint). With ``webrtc`` a session may still ask for ``silero``: the
    model loads when the first such session opens. Measured side by side in docs/benchmarks.md
    ("VAD engines")."""


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Structured logs on stderr (structlog); nothing is logged per audio frame."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written, for the hub's own lines and for aiohttp / Socket.io alike. The
    one-shot commands (``asrhub transcribe``, ``stream``, ``providers``) write ``warning`` and up
    unless it is set (file, environment or flag): their output is their result."""
    format: Literal["auto", "json", "console"] = "auto"
    """``auto``: pretty on a terminal, JSON lines otherwise."""


class TelemetrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry traces (the ``otel`` extra: ``pip install 'asrhub[otel]'``; docs/observability.md):
    a ``session`` span, one ``utterance`` span per utterance, one ``engine.call`` per provider
    call (inside a Ray replica too), ``resume`` on the node that resumes a session. Off by
    default; off, nothing of OpenTelemetry is imported and no frame pays for it. The standard
    ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
    ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES``) are honoured; a setting here wins over them."""

    enabled: bool = False
    """Trace sessions. Needs the ``otel`` extra: a hub started with it and without the extra
    stops at start-up with an error that names the extra."""
    endpoint: str = ""
    """OTLP/HTTP endpoint spans are exported to (``http://collector:4318``; ``/v1/traces`` is
    appended). Empty: ``OTEL_EXPORTER_OTLP_ENDPOINT``, else the exporter's default
    (``http://localhost:4318``)."""
    service_name: str = ""
    """``service.name`` of the spans. Empty: ``OTEL_SERVICE_NAME``, else ``asrhub``."""
    sample_ratio: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    """Share of sessions traced (parent-based: a client's ``traceparent`` that says sampled is
    always followed). 0 traces none but a client's sampled ones."""


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prometheus metrics on ``/metrics`` (see docs/architecture.md for the list)."""

    operator_sample: Annotated[int, Meta(ge=0)] = 8
    """Per-stage timing (``asrhub_operator_seconds``) runs in one session in this many, the first
    one included, on every frame of it; the other sessions pay nothing for it. 1 times every
    session, 0 none. Every other metric counts everything."""
    worker_sync_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    """With ``--workers`` > 1: how often each worker writes its numbers for the machine-wide
    scrape (the worker that answers a scrape writes its own first, so they are always fresh;
    the others' are at most this old). Each write stops the worker's loop for ~4 ms at 1,000
    sessions (docs/benchmarks.md), so a short period costs latency."""


class ClusterSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Many hub processes (``--workers``) and machines as one hub, on Redis (docs/cluster.md).
    Without ``redis_url`` every process is a hub of its own, as before."""

    redis_url: str | None = None
    """``redis://HOST:PORT/DB`` (or ``rediss://``, ``unix://``). Set: limits hold cluster-wide,
    resumable sessions resume on any node, Socket.io rooms span the nodes."""
    key_prefix: str = "asrhub"
    """Prefix of every Redis key and channel (several hubs may share one Redis)."""
    lease_s: Annotated[float, Meta(ge=1.0, le=600.0)] = 15.0
    """A session's hold on cluster capacity lasts this long unless its node renews it (every
    third of it): a dead node's sessions free their capacity within this time."""
    redis_timeout_s: Annotated[float, Meta(gt=0.0, le=30.0)] = 0.5
    """Every Redis call gives up after this; the hub then acts as documented for an outage."""


class DiarizationSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who spoke (issue 26): files and sessions that ask for ``diarize`` (docs/diarization.md)."""

    encoder: Literal["campplus", "ge2e"] = "campplus"
    """The speaker encoder: ``campplus`` (CAM++, 3D-Speaker, trained on Chinese and English; run
    as ONNX) or ``ge2e`` (Resemblyzer's GE2E, run with numpy). docs/diarization.md compares them."""
    model_dir: str | None = None
    """Folder of the encoder's weights (``campplus.onnx``, or ``pretrained.pt`` for ``ge2e``);
    unset: ``$ASRHUB_MODEL_DIR/campplus`` or ``$ASRHUB_MODEL_DIR/resemblyzer`` (where
    ``scripts/setup.sh`` puts them)."""
    preload: bool = False
    """Load the speaker model at start-up (~0.3 s, 17–28 MB) instead of for the first request or
    session that asks for diarization."""
    file_threshold: Annotated[float, Meta(gt=0.0, lt=1.0)] | None = None
    """Files: cosine distance at which speaker clusters stop merging (lower: more speakers);
    unset: the encoder's tuned value (CAM++ 0.50, GE2E 0.26)."""
    live_threshold: Annotated[float, Meta(gt=0.0, lt=1.0)] | None = None
    """Sessions: the clustering threshold for a session's utterances (each new one joins the
    label of its cluster, or starts a new speaker); unset: the encoder's tuned value (CAM++
    0.50, GE2E 0.26)."""


class JobsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Jobs that call back: Deepgram pre-recorded ``callback=URL``, ``POST /v1/transcribe``
    with ``callback_url`` (docs/protocol.md "Jobs that call back", docs/security.md)."""

    callback_secret: str | None = None
    """Server secret the signing secret of each API key is derived from (HKDF-SHA256, the key's
    fingerprint as ``info``); the same on every node of a cluster. Unset: a request with a
    callback is refused with 400 (nothing could be signed)."""
    callback_allow: tuple[str, ...] = ()
    """Callback targets allowed although they are not public addresses: host names (exact) or
    addresses / CIDR blocks (``10.0.0.0/8``, ``127.0.0.1``). Everything else that resolves to a
    loopback, private, link-local, multicast or reserved address is refused."""
    max_queued: Annotated[int, Meta(ge=1)] = 32
    """Jobs waiting or running at once (on this node; with a cluster, on every node together);
    one more is refused with ``capacity``."""
    max_queued_bytes: Annotated[int, Meta(ge=1024)] = 512 << 20
    """Uploaded bytes the waiting jobs hold together (each at most ``server.max_upload_bytes``);
    a job past it is refused with ``capacity``. With a cluster: the audio kept in Redis for
    every node's waiting jobs."""
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 2
    """Jobs transcribed at once on this node (each then also waits in the upload line,
    ``limits.max_uploads``)."""
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 6
    """Callback POSTs of one job at most (the first included)."""
    retry_base_s: Annotated[float, Meta(gt=0.0)] = 1.0
    """The first retry waits up to this (full jitter), each next one up to twice as long."""
    retry_max_s: Annotated[float, Meta(gt=0.0)] = 60.0
    """Longest wait between two attempts."""
    deliver_within_s: Annotated[float, Meta(gt=0.0)] = 900.0
    """No attempt starts later than this after the result was ready: the job is then ``failed``."""
    timeout_s: Annotated[float, Meta(gt=0.0, le=300.0)] = 15.0
    """One callback POST (connect, send, read the answer) gives up after this."""
    keep_s: Annotated[float, Meta(gt=0.0)] = 3600.0
    """A finished job's status stays readable (``GET /v1/jobs/ID``) this long."""


class TraceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Session traces for ``asrhub replay`` (docs/trace.md). A trace holds the session's audio:
    nothing is recorded unless a store is set here, and then only the sessions that ask
    (``"trace": true``) or that ``sample_rate`` picks."""

    dir: str | None = None
    """Folder for trace files, one per session, named ``<session id>.trace``. Unset (and no
    ``redis``): the hub records nothing and refuses ``"trace": true`` with ``bad_message``."""
    redis: bool = False
    """Store traces in ``cluster.redis_url`` (key ``<key_prefix>:trace:<session id>``, expiring
    after ``ttl_s``) instead of a folder, so any node can serve one."""
    ttl_s: Annotated[float, Meta(gt=0.0, le=30 * 86400.0)] = 86400.0
    """How long a trace stays in Redis."""
    sample_rate: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    """Share of all sessions recorded without asking (server policy; 0: only those that ask)."""
    max_bytes: Annotated[int, Meta(ge=4096, le=1 << 30)] = 16 << 20
    """Bound on one trace (audio included, ~8 min of 16 kHz PCM16 by default); at the bound a
    ``truncated`` record ends it and the session goes on unrecorded."""
    max_seconds: Annotated[float, Meta(gt=0.0)] = 600.0
    """Bound on the wall time one trace covers, the same way."""
    max_open: Annotated[int, Meta(ge=1, le=4096)] = 32
    """Sessions recorded at once (a trace is held in memory until its session closes: at most
    ``max_open`` × ``max_bytes``). Past it ``sample_rate`` picks none, and a session that asks
    is refused with ``capacity``."""


LANGUAGE_ROWS: dict[str, tuple[str, ...]] = {
    "en": ("whisper:tiny.en", "whisper:base"),
    "ko": ("vosk",),
    "zh": ("funasr",),
    "*": ("whisper:base",),
}
"""The default language table of ``provider: "auto"``."""


class KeyRouting(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One API key's routing policy (``[routing.keys."key-…"]``, by the key's fingerprint)."""

    allowed: tuple[str, ...] | None = None
    """The engines its ``auto`` utterances may use (e.g. ``["whisper:tiny.en", "vosk"]``);
    unset: every engine."""
    prefer: Literal["quality", "cost"] = "quality"
    """``quality``: the language table's order; ``cost``: the cheapest engine first
    (``routing.costs``), the table's order among equals."""


class RoutingSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``provider: "auto"``: the engines of each utterance (docs/routing.md)."""

    languages: dict[str, tuple[str, ...]] = msgspec.field(default_factory=lambda: dict(LANGUAGE_ROWS))
    """Language → engines in order of preference (``provider`` or ``provider:model``); ``*``:
    every other language, and the fallback of every language. Engines this hub does not run
    are left out (``funasr`` where configured)."""
    detect_with: str = "whisper:base"
    """The engine that identifies the language of an utterance when the client gave none (a
    multilingual whisper model)."""
    detect_among: tuple[str, ...] = ()
    """Languages identification chooses among (the ones your users speak); empty: any. A
    short list makes identification sure of languages a model hears poorly."""
    confident: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5
    """A session's identified language at this probability or above is kept for its later
    utterances (and passed to the engine); below it, the next utterance is identified again."""
    max_queue: Annotated[int, Meta(ge=1)] = 4
    """An engine with this many calls in flight yields the first place to a less busy candidate."""
    ewma_alpha: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.2
    """Weight of the newest call in each engine's moving time per audio second."""
    costs: dict[str, float] = {}
    """Relative cost per audio second of each engine, for keys that prefer cost (unset: 1)."""
    keys: dict[str, KeyRouting] = {}
    """Per-key policies by key fingerprint (``key-…``, as logs and ``/v1/usage`` name it);
    ``*``: every other key."""

    def __post_init__(self) -> None:
        for name in self.keys:
            if name != "*" and not is_fingerprint(name):  # never echo it: it may be a key
                raise ValueError(
                    "routing.keys: an entry is not a key fingerprint (key- and 12 hex digits) nor *; "
                    "name a key by its fingerprint (GET /v1/usage shows it), never by the key"
                )


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything a hub process is started with."""

    default_provider: str = "whisper"
    """Provider for sessions whose config names none; ``none`` runs VAD / wake word only."""
    enabled_providers: tuple[str, ...] | None = None
    """Providers to load at start-up. Unset: the default provider plus every provider that has a
    ``[providers.NAME]`` table."""
    server: ServerSettings = ServerSettings()
    limits: Limits = Limits()
    vad: VadSettings = VadSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    cluster: ClusterSettings = ClusterSettings()
    diarization: DiarizationSettings = DiarizationSettings()
    jobs: JobsSettings = JobsSettings()
    trace: TraceSettings = TraceSettings()
    routing: RoutingSettings = RoutingSettings()
    providers: dict[str, dict[str, Any]] = {}
    """Per-provider settings tables, e.g. ``[providers.whisper] model = "…"``."""

    def __post_init__(self) -> None:
        if self.trace.redis and not self.cluster.redis_url:
            raise ValueError("trace.redis = true needs cluster.redis_url")

    def provider_names(self) -> list[str]:
        if self.enabled_providers is not None:
            names = list(self.enabled_providers)
        else:
            names = [self.default_provider, *self.providers]
        return [n for n in dict.fromkeys(names) if n != "none"]
