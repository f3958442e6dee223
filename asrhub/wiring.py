"""The composition root: the only module that names concrete operators and builds a hub.

Every session's chain is, in order::

    RawAudio ─decode─▶ AudioChunk(any rate) ─resample─▶ AudioChunk(16 kHz)
        ─meter_audio─▶ counted against the key's usage, cut at its daily quota   in a hub
        ─wakeword─▶ (+ wakeword.detected)            only with wakeword.enabled
        ─vad_gate─▶ vad.speech_started · speech audio · vad.speech_ended
        ─wake_gate─▶ only the utterance after a detection   only with wakeword.enabled
        ─segment─▶ Segment (in-progress snapshots + the whole utterance)   batch engines only
        ─provider stage─▶ transcript.partial / transcript.final / error
        ─format_transcripts─▶ numerals, redaction, profanity filter (config ``format``)

With ``multichannel``, ``split_channels`` comes first and runs this chain once per channel,
merging the channels' events tagged with ``channel``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from asrhub.config import AudioFormat, SessionConfig
from asrhub.diarize.models import SpeakerModels
from asrhub.engine.batch_stage import batch_stage
from asrhub.engine.registry import ProviderRegistry
from asrhub.errors import HubError
from asrhub.flow import PendingPart
from asrhub.frames import TARGET_RATE
from asrhub.hub import NO_PROVIDER, Hub
from asrhub.metrics.hub import HubMetrics
from asrhub.operators.decode import decode
from asrhub.operators.format_transcripts import format_transcripts
from asrhub.operators.meter_audio import meter_audio
from asrhub.operators.resample import filters_loaded, load_filters, resample
from asrhub.operators.segment import segment
from asrhub.operators.turn_model import TurnModel
from asrhub.operators.vad_gate import SileroVad, vad_gate
from asrhub.operators.wakeword_models import WakewordModels
from asrhub.plugin import EarlyFinals, Operator, Provider, ProviderUnavailable
from asrhub.routing import AUTO
from asrhub.routing.engines import engine_table
from asrhub.routing.language_id import Identify
from asrhub.routing.router import Router
from asrhub.session.context import Context
from asrhub.settings.schema import Settings
from asrhub.trace.recorder import Tracer
from asrhub.trace.store import DirStore, RedisStore, TraceStore

SPLIT_SEARCH_S = 3.0
"""An utterance force-split at ``limits.max_utterance_s`` is cut at its quietest 20 ms within
the last this many seconds (a pause between words), not through a word."""


def build_pipeline(
    ctx: Context,
    *,
    wakewords: WakewordModels | None = None,
    silero: SileroVad | None = None,
    speakers: SpeakerModels | None = None,
    turns: TurnModel | None = None,
) -> Operator:
    """One session's chain. ``wakewords``, ``silero``: the hub's shared wake-word and Silero VAD
    models (:func:`build_hub` passes them; None: a session that needs one loads its own);
    ``speakers``: the hub's speaker model (a ``diarize`` session wraps its engine stage in
    ``speaker_labels``); ``turns``: the hub's smart-turn model (None: a semantic session loads
    one of its own, when the hub allows semantic turns).

    A ``multichannel`` session (PCM with ``audio.channels`` > 1, or a WAV) is split first: each
    channel gets its own mono chain — decoder, meter, VAD and end of turn, engine stage (its own
    segment ids, ordering, partials and early finals), speaker labels, formatting — and their
    events merge into one stream tagged with ``channel``. Each chain's context holds its own
    share of the session's ``pending`` (:class:`~asrhub.flow.PendingPart`): one channel's stage
    cannot release another's hold."""
    config = ctx.config
    models = _Models(wakewords, silero, speakers, turns)
    if config.multichannel and (config.audio.channels > 1 or config.audio.encoding == "wav"):
        from asrhub.operators.split_channels import split_channels

        def channel_chain(channel: int, mono: AudioFormat) -> Operator:
            part = PendingPart(ctx.pending, f"channel {channel}")
            chain_ctx = dataclasses.replace(ctx, pending=part, early_finals=EarlyFinals())
            return _chain(chain_ctx, mono, models, chain=f"channel {channel}")

        split: Operator = split_channels(
            config.audio, build=channel_chain, max_channels=ctx.limits.max_channels
        )
        return split
    return _chain(ctx, config.audio, models)


@dataclasses.dataclass(frozen=True, slots=True)
class _Models:
    """The hub's shared models a chain may use (None: a chain that needs one loads its own)."""

    wakewords: WakewordModels | None
    silero: SileroVad | None
    speakers: SpeakerModels | None
    turns: TurnModel | None


def _chain(ctx: Context, audio: AudioFormat, models: _Models, *, chain: str = "") -> Operator:
    """The chain of one audio stream (``audio``: the session's, or one channel's, mono; ``chain``:
    "" or the channel's name, naming its speaker tracker)."""
    config, limits = ctx.config, ctx.limits
    wakewords, silero, speakers, turns = models.wakewords, models.silero, models.speakers, models.turns
    turn = config.turn_detection or limits.default_turn
    if limits.semantic_turns and turns is None:
        turns = TurnModel()
    turn_model = turns if limits.semantic_turns else None
    stages: list[tuple[str, Operator]] = [
        (
            "decode",
            decode(
                audio,
                pending=ctx.pending,
                slots=ctx.decoder_slots,
                key=ctx.key,
                slot_wait_s=limits.decoder_wait_s,
                stall_s=limits.decoder_stall_s,
                rate=TARGET_RATE,
                max_rate=limits.max_input_rate,
            ),
        ),
        ("resample", resample(TARGET_RATE)),
    ]
    if ctx.usage is not None:
        stages.append(("meter_audio", meter_audio(ctx.usage)))
    if config.wakeword.enabled:
        from asrhub.operators.wakeword import wakeword

        stages.append(
            (
                "wakeword",
                wakeword(
                    names=config.wakeword.names,
                    threshold=config.wakeword.threshold,
                    off_loop=True,
                    pending=ctx.pending,
                    models=wakewords,
                ),
            )
        )
    if config.vad.enabled:
        stages.append(
            (
                "vad_gate",
                vad_gate(
                    engine=config.vad.engine or "webrtc",
                    aggressiveness=config.vad.aggressiveness,
                    threshold=config.vad.threshold,
                    start_ms=config.vad.start_ms,
                    silence_ms=config.vad.silence_ms,
                    preroll_ms=config.vad.preroll_ms,
                    pause_ms=early_final_ms(ctx),
                    # nothing reads the gate's audio without an engine, a wake word or the turn
                    # model: events only
                    audio=bool(ctx.providers) or config.wakeword.enabled or turn.semantic,
                    silero=silero,
                    pending=ctx.pending,
                    turn=turn,
                    turn_model=turn_model,
                    early=ctx.early_finals,
                ),
            )
        )
    if config.wakeword.enabled:
        from asrhub.operators.wake_gate import wake_gate

        stages.append(("wake_gate", wake_gate(timeout_s=config.wakeword.timeout_s)))
    if ctx.providers:
        primary, *fallbacks = ctx.providers
        if ctx.router is not None or not primary.capabilities.streaming:
            partials = ctx.router is not None or primary.capabilities.partials
            stages.append(
                (
                    "segment",
                    segment(
                        max_s=limits.max_utterance_s,
                        min_s=limits.min_utterance_s,
                        window_s=None if config.vad.enabled else limits.fixed_window_s,
                        partial_interval_s=limits.partial_interval_s if partials else None,
                        split_search_s=SPLIT_SEARCH_S,
                        partials=config.partials,
                    ),
                )
            )
        if ctx.router is not None:  # provider "auto": the engines are chosen per utterance
            stage = batch_stage(primary, ctx, tuple(fallbacks), router=ctx.router)
        else:
            stage = primary.stage(ctx, tuple(fallbacks))
        if ctx.trace is not None:  # what the engine produces, where in the stream (asrhub.trace)
            stage = ctx.trace.engine(stage)
        name = AUTO if ctx.router is not None else primary.name
        stages.append((f"provider:{name}", ctx.metrics.provider_latency(stage)))
        if config.diarize:
            stages = _diarized(ctx, stages, speakers or SpeakerModels(), chain)
        stages.append(("format", format_transcripts(config=config.format, language=config.fixed_language)))
    return ctx.metrics.instrument(stages)  # reactivex.compose, plus per-stage timing for /metrics


def _diarized(
    ctx: Context, stages: list[tuple[str, Operator]], speakers: SpeakerModels, chain: str
) -> list[tuple[str, Operator]]:
    """The engine stage (with ``segment`` before it) wrapped in ``speaker_labels``, which sees the
    speech audio and VAD events going in and labels the finals coming out; its tracker is the
    session's (``ctx.speakers``, named ``chain``), so its state survives a resume elsewhere."""
    from asrhub.operators.speaker_labels import speaker_labels

    tail = 2 if stages[-2][0] == "segment" else 1
    diarizer = speakers.get()  # loaded by the hub's preparation for open_async
    inner = ctx.metrics.instrument(stages[-tail:])
    labels = speaker_labels(
        inner,
        voices=diarizer.voices,
        threshold=speakers.live_threshold,
        max_speakers=ctx.config.max_speakers,
        keep_s=2 * ctx.limits.max_utterance_s + 5.0,
        memory=ctx.speakers,
        name=chain,
    )
    return [*stages[:-tail], ("speaker_labels", labels)]


def early_final_ms(ctx: Context) -> int:
    """The pause that starts an early final (0: none): only a batch engine can use one."""
    if not ctx.providers or (ctx.router is None and ctx.providers[0].capabilities.streaming):
        return 0
    return ctx.limits.early_final_ms


def create_providers(settings: Settings, registry: ProviderRegistry | None = None) -> dict[str, Provider]:
    registry = registry or ProviderRegistry.from_entry_points()
    providers: dict[str, Provider] = {}
    for name in settings.provider_names():
        options: dict[str, Any] = settings.providers.get(name, {})
        providers[name] = registry.create(name, options)
    return providers


def build_hub(settings: Settings, registry: ProviderRegistry | None = None) -> Hub:
    """A hub with the standard chain and the providers the settings enable (not yet started)."""
    default = settings.default_provider
    cluster = None
    if settings.cluster.redis_url:
        from asrhub.cluster.leases import Cluster

        cluster = Cluster(settings.cluster, settings.limits)
    wakewords = WakewordModels()
    silero = SileroVad()
    turns = TurnModel()
    speakers = SpeakerModels(
        settings.diarization.model_dir,
        encoder=settings.diarization.encoder,
        threshold=settings.diarization.file_threshold,
        live_threshold=settings.diarization.live_threshold,
    )
    hub = Hub(
        providers=create_providers(settings, registry),
        pipeline_factory=partial(
            build_pipeline, wakewords=wakewords, silero=silero, speakers=speakers, turns=turns
        ),
        default_provider=default if default else NO_PROVIDER,
        limits=settings.limits,
        cluster=cluster,
        metrics=HubMetrics.from_settings(settings.metrics),
        vad_engine=settings.vad.engine,
        speakers=speakers,
    )
    if settings.trace.dir or settings.trace.redis:
        hub.tracing = _tracer(settings)
    hub.router = build_router(hub, settings)
    if settings.diarization.preload:
        hub.warmups.append(hub.speakers.get)
    hub.preparations += [
        partial(_wakeword_load, wakewords),
        _resampler_load,
        partial(_silero_load, silero),
        partial(_speakers_load, speakers),
        partial(_turn_load, turns),
    ]
    if settings.vad.engine == "silero":
        hub.warmups.append(partial(_silero_warmup, silero))  # every session may use it
    if settings.limits.semantic_turns and settings.limits.turn_detection == "semantic":
        hub.warmups.append(turns.load)  # every session may use it: a missing model stops the start
    return hub


def _tracer(settings: Settings) -> Tracer:
    """Session traces into ``trace.dir``, or into the cluster's Redis with ``trace.redis``."""
    store: TraceStore
    if settings.trace.redis:  # the settings make sure cluster.redis_url is set
        store = RedisStore(
            str(settings.cluster.redis_url),
            prefix=settings.cluster.key_prefix,
            ttl_s=settings.trace.ttl_s,
            timeout_s=settings.cluster.redis_timeout_s,
        )
    else:
        store = DirStore(str(settings.trace.dir))
    return Tracer(settings.trace, store)


def build_router(hub: Hub, settings: Settings) -> Router:
    """The hub's router for ``provider: "auto"`` (``[routing]``), on its breakers and figures;
    languages are identified by ``routing.detect_with`` (a whisper model) when the hub has it."""
    hub.stats.alpha = settings.routing.ewma_alpha
    engines = engine_table(hub.providers)
    return Router(
        engines,
        settings.routing,
        breakers=hub.breakers,
        stats=hub.stats,
        identify=identifier(hub.providers, settings.routing.detect_with),
        timeout_s=hub.limits.provider_timeout_s,
    )


def identifier(providers: dict[str, Provider], engine: str) -> Identify | None:
    """Language identification by ``engine`` (``provider:model``) when that provider has it
    (``detect_language``) and offers that model; None: routes rely on the client's hint."""
    name, _, model = engine.partition(":")
    provider = providers.get(name)
    detect = getattr(provider, "detect_language", None)
    if provider is None or detect is None or (model and model not in provider.capabilities.models):
        return None
    return partial(detect, model=model or None)


def _silero_warmup(silero: SileroVad) -> None:
    """The Silero VAD model at start-up, when it is the server's default engine; a missing model
    stops the start (``asrhub serve`` prints the message with the set-up step and exits 1)."""
    try:
        silero.load()
    except HubError as exc:
        raise ProviderUnavailable(f"vad.engine = silero: {exc.message}") from None


def _turn_load(turns: TurnModel, config: SessionConfig) -> Callable[[], object] | None:
    """The smart-turn model, for a semantic session on a hub that was not started (``start``
    loads it for a served hub)."""
    turn = config.turn_detection
    if turn is None or not turn.semantic or turns.ready:
        return None
    return lambda: turns.load()


def _wakeword_load(wakewords: WakewordModels, config: SessionConfig) -> Callable[[], object] | None:
    """A wake-word session's models, loaded when the first session naming them opens (not at
    start-up: a hub whose sessions never ask holds none of them)."""
    names = config.wakeword.names
    if not config.wakeword.enabled or wakewords.ready(names):
        return None
    return partial(wakewords.load, names)


def _silero_load(silero: SileroVad, config: SessionConfig) -> Callable[[], object] | None:
    """The Silero VAD model, when a session asks for it and the hub has not loaded it (a hub
    whose default engine is webrtc holds none until then)."""
    if not config.vad.enabled or config.vad.engine != "silero" or silero.loaded:
        return None
    return partial(silero.load)


def _speakers_load(speakers: SpeakerModels, config: SessionConfig) -> Callable[[], object] | None:
    """The speaker model, for the first session that asks for ``diarize``."""
    if not config.diarize or speakers.loaded is not None:
        return None
    return speakers.get


def _resampler_load(config: SessionConfig) -> Callable[[], object] | None:
    """The resampler's filter library, when a session's PCM may arrive at another rate than
    16 kHz (compressed audio is resampled by its decoder)."""
    audio = config.audio
    pcm = audio.encoding in ("pcm_s16le", "pcm_f32le")
    if filters_loaded() or not (audio.encoding == "wav" or (pcm and audio.sample_rate != TARGET_RATE)):
        return None
    return lambda: load_filters()
