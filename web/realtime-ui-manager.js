// The live session on the page: connects a transport adapter, feeds it microphone
// frames, renders the transcript (finals in segment order, partial replaced in
// place), the connection state and errors in words, and reconnects with back-off
// when the connection drops during a session.

import { createAdapter, MAX_BACKLOG_BYTES, TransportError } from "./protocol-adapters.js";
import { UnconfirmedAudio } from "./unconfirmed-audio.js";

// ---------------------------------------------------------------- errors in words

const SENTENCES = {
  unauthorized: "The hub rejected the API key. Enter a valid key in “API key” and press Start again.",
  capacity: "The hub is busy: it has reached its limit of sessions. Try again in a moment.",
  unknown_provider: "The hub has no such speech engine. Choose another one in “Provider”.",
  bad_audio: "The hub could not decode the audio it received.",
  bad_message: "The hub did not understand a message from this page.",
  provider_failed: "The speech engine failed while transcribing; some words may be missing.",
  slow_consumer: "The connection could not keep up with the results, so the hub closed it; reconnecting.",
  policy: "The hub closed the connection (policy violation).",
  shutdown: "The hub is restarting; reconnecting.",
  handover: "The hub is restarting; the session continues on another node.",
  resumed: "This session was taken over by another connection (another tab or window?).",
  server_disconnect: "The hub ended the connection.",
  too_large: "The audio is larger than the hub accepts.",
  timeout: "The session timed out.",
  network: "Cannot reach the hub. Check that it is running and that the hub address is right.",
  transport_failed: "The connection to the hub failed.",
  client_missing: "The Socket.io client library is not available on the server (run “npm ci” in web/).",
  http_error: "The hub answered with an error.",
  gave_up: "Lost the connection to the hub and could not get it back.",
  mic_denied: "Microphone access was denied. Allow the microphone for this page and press Start again.",
  no_mic: "No microphone was found. Connect one and press Start again.",
  mic_busy: "The microphone is in use by another application.",
  mic_failed: "The microphone could not be opened.",
  insecure_context: "The microphone only works on a secure page: open the hub via https:// or http://localhost.",
  no_media: "This browser cannot capture audio.",
  no_worklet: "This browser lacks AudioWorklet support, which the microphone capture needs.",
  audio_failed: "Audio processing could not be started in this browser.",
  no_file: "Choose an audio file first.",
};

/** A readable sentence for an error code (+ the raw detail, shown smaller). */
export function describeError(code, message) {
  if (code === "unauthorized" && message && /origin/i.test(message)) {
    // The hub refuses browser pages from origins it does not list (server.allowed_origins).
    return {
      code,
      sentence: "The hub does not accept requests from this page's address (its origin is not allowed).",
      detail: message,
    };
  }
  const sentence = SENTENCES[code] || (message ? `Error: ${message}` : `Error (${code}).`);
  const detail = message && SENTENCES[code] && message !== sentence ? message : "";
  return { code: code || "unknown", sentence, detail };
}

// Errors after which reconnecting would only fail again.
const NOT_RETRYABLE = new Set([
  "unauthorized",
  "unknown_provider",
  "bad_message",
  "bad_audio",
  "too_large",
  "client_missing",
  "resumed",
]);

// ---------------------------------------------------------------- views

export class ErrorView {
  constructor(el) {
    this.el = el;
    this.clear();
  }

  show(code, message) {
    const { sentence, detail } = describeError(code, message);
    this.el.replaceChildren();
    const strong = document.createElement("span");
    strong.className = "error-sentence";
    strong.textContent = sentence;
    this.el.append(strong);
    if (detail) {
      const small = document.createElement("span");
      small.className = "error-detail";
      small.textContent = ` (${detail})`;
      this.el.append(small);
    }
    this.el.dataset.code = code || "unknown";
    this.el.hidden = false;
  }

  clear() {
    this.el.replaceChildren();
    delete this.el.dataset.code;
    this.el.hidden = true;
  }
}

const STATE_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  open: "Connected, starting session…",
  live: "Live",
  reconnecting: "Connection lost, reconnecting…",
  handover: "The hub is restarting; continuing the session on another node…",
  finishing: "Finishing: waiting for the last results…",
  failed: "Stopped after an error",
};

export class ConnectionStateView {
  constructor(el) {
    this.el = el;
    this.set("idle");
  }

  set(state, text) {
    this.state = state;
    this.el.dataset.state = state;
    this.el.textContent = text || STATE_TEXT[state] || state;
  }
}

const CHUNK_SEGMENTS = 50;

function fmtTime(t) {
  return typeof t === "number" && isFinite(t) ? `${t.toFixed(2)} s` : "?";
}

/** A `transcript.partial` split into its stable words and the tail that may still change
 *  (`stable` is the prefix of `text` two decodes agreed on; absent from engines without one). */
export function partialParts(msg) {
  const text = (msg.text || "").trim();
  const stable = typeof msg.stable === "string" ? msg.stable.trim() : "";
  if (!stable || !text.startsWith(stable)) return { stable: "", tail: text };
  return { stable, tail: text.slice(stable.length).trim() };
}

export class TranscriptView {
  constructor(finalEl, partialEl) {
    this.finalEl = finalEl;
    this.partialEl = partialEl;
    this.clear();
  }

  clear() {
    this.segments = []; // {key, epoch, order, text, el, space}, in display order
    this.byKey = new Map();
    this.chunk = null;
    this.chunkCount = 0;
    this.filled = 0; // segments with text
    this.arrival = 0;
    this.finalEl.replaceChildren();
    this.partialEl.textContent = "";
    this.partialKey = null;
  }

  static order(segmentId, fallback) {
    const n = Number(segmentId);
    if (segmentId !== null && segmentId !== "" && Number.isFinite(n)) return n;
    const m = /(\d+)\s*$/.exec(String(segmentId)); // "seg-12" -> 12
    return m ? Number(m[1]) : fallback;
  }

  /** The partial in two spans: its stable words (they will not change before the final) in
   *  the text's own style, the tail that may still change dimmed. */
  partial(epoch, msg) {
    const key = `${epoch}:${msg.segment_id}`;
    if (this.byKey.has(key)) return; // already final
    this.partialKey = key;
    const { stable, tail } = partialParts(msg);
    const tailEl = document.createElement("span");
    tailEl.className = "partial-tail";
    tailEl.textContent = stable && tail ? ` ${tail}` : tail;
    if (stable) {
      const stableEl = document.createElement("span");
      stableEl.className = "partial-stable";
      stableEl.textContent = stable;
      this.partialEl.replaceChildren(stableEl, tailEl);
    } else {
      this.partialEl.replaceChildren(tailEl);
    }
    this.partialEl.title = `Partial, ${fmtTime(msg.start)} to ${fmtTime(msg.end)}`;
  }

  /** Adds (or corrects) one final. The common case appends two nodes at the end; an
   *  out-of-order final is inserted before its successor. Nothing else in the DOM is touched,
   *  so a long session costs O(1) per final and a screen reader (role=log, aria-relevant
   *  additions) announces only the new words. */
  final(epoch, msg) {
    const key = `${epoch}:${msg.segment_id}`;
    const text = (msg.text || "").trim();
    let seg = this.byKey.get(key);
    if (!seg) {
      seg = { key, epoch, order: TranscriptView.order(msg.segment_id, this.arrival), seq: this.arrival++ };
      seg.el = document.createElement("span");
      seg.el.className = "segment";
      seg.el.dataset.segmentId = String(msg.segment_id);
      seg.space = document.createTextNode(" ");
      let i = this.segments.length;
      while (
        i > 0 &&
        (this.segments[i - 1].epoch > epoch ||
          (this.segments[i - 1].epoch === epoch && this.segments[i - 1].order > seg.order))
      ) {
        i--;
      }
      this.segments.splice(i, 0, seg);
      this.byKey.set(key, seg);
      const after = this.segments[i + 1];
      if (after) after.space.parentNode.insertBefore(seg.space, after.space);
      else this.lastChunk().append(seg.space);
      seg.space.parentNode.insertBefore(seg.el, seg.space.nextSibling);
    }
    if (!seg.text !== !text) this.filled += text ? 1 : -1;
    seg.text = text;
    seg.el.textContent = text;
    seg.el.hidden = !text;
    const who = [msg.provider, msg.language].filter(Boolean).join(", ");
    seg.el.title = `${fmtTime(msg.start)} to ${fmtTime(msg.end)}${who ? ` (${who})` : ""}`;
    if (this.partialKey === key || this.partialKey === null) {
      this.partialEl.textContent = "";
      this.partialKey = null;
    }
  }

  /** Finals go into blocks of CHUNK_SEGMENTS: a browser lays out an inline run as a whole,
   *  so one ever-growing line of spans would cost O(n) layout per final; a finished block is
   *  never laid out again. */
  lastChunk() {
    if (!this.chunk || this.chunkCount >= CHUNK_SEGMENTS) {
      this.chunk = document.createElement("span");
      this.chunk.className = "chunk";
      this.chunkCount = 0;
      this.finalEl.append(this.chunk);
    }
    this.chunkCount += 1;
    return this.chunk;
  }

  clearPartial() {
    this.partialEl.textContent = "";
    this.partialKey = null;
  }

  get empty() {
    return this.filled === 0;
  }

  get text() {
    return this.segments
      .map((s) => s.text)
      .filter(Boolean)
      .join(" ");
  }
}

// ---------------------------------------------------------------- the live session

const MAX_ATTEMPTS = 8; // 0.5, 1, 2, 4, 8, 8, 8, 8 s: about 40 s in all
const END_TIMEOUT_MS = 20000; // wait this long for session.closed after session.end
const HEALTHY_AFTER_MS = 10000; // a session up this long resets the reconnect back-off
const BYTES_PER_SECOND = 16000 * 2; // the page sends 16 kHz mono pcm_s16le
const KEEP_SECONDS = 60; // sent audio kept for a resume (after the last final)
const HOLD_SECONDS = 30; // audio held back (not sent yet) before the capture pauses
const SHOW_HELD_BYTES = BYTES_PER_SECOND / 2; // tell the user once half a second is held back
const PUMP_MS = 50; // re-check a full send buffer this often (WebSocket has no drain event)

// Transports that can continue a dropped session (session.resume); HTTP+SSE re-attaches its
// event stream by itself, and a new HTTP session gets the unconfirmed audio re-sent.
const RESUMABLE = new Set(["websocket", "socketio"]);

export class RealtimeUiManager {
  /**
   * @param {object} o
   * @param {AudioStreamManager} o.audio
   * @param {TranscriptView} o.transcript
   * @param {ConnectionStateView} o.connection
   * @param {ErrorView} o.errors
   * @param {VadDisplay} o.vad
   * @param {WakewordManager} o.wakeword
   * @param {(running: boolean) => void} o.onRunningChange
   * @param {(msg: object) => void} [o.onHubEvent]  every hub event (debug log)
   * @param {HTMLElement} [o.backlogEl]  where "audio held back" is shown
   */
  constructor(o) {
    Object.assign(this, o);
    this.running = false;
    this.stopping = false;
    this.adapter = null;
    this.live = false; // session.started / session.resumed seen on this connection
    this.stream = new UnconfirmedAudio({
      bytesPerSecond: BYTES_PER_SECOND,
      keepSeconds: KEEP_SECONDS,
      holdSeconds: HOLD_SECONDS,
    });
    this.paused = false; // the held-back bound was reached: capture paused
    this.pausedBytes = 0; // audio not captured while paused
    this.epoch = 0; // connections
    this.sessionEpoch = 0; // sessions (a resumed session keeps its epoch)
    this.attempts = 0;
    this.retryTimer = null;
    this.pumpTimer = null;
    this.lastError = null;
    this.resume = null; // {token, lastSegmentId}
    this.resumes = 0;
    this.handingOver = false; // session.handover seen: the next close resumes at once
    this.handovers = 0;
    this.audio.onFrame((buf) => this.handleFrame(buf));
  }

  /** settings = {transport, hubUrl, apiKey, config} */
  async start(settings) {
    if (this.running) return;
    this.settings = settings;
    this.running = true;
    this.stopping = false;
    this.attempts = 0;
    this.lastError = null;
    this.clearErrorOnFinal = false;
    this.resume = null;
    this.handingOver = false;
    this.stream.reset();
    this.paused = false;
    this.pausedBytes = 0;
    this.showBacklog();
    this.errors.clear();
    this.onRunningChange(true);
    this.connection.set("connecting");
    this.vad.setSession(settings.config.vad);
    this.wakeword.setSession(settings.config.wakeword);

    try {
      await this.audio.start();
    } catch (err) {
      this.fail(err.code || "audio_failed", err.message);
      return;
    }
    try {
      await this.connectOnce();
    } catch (err) {
      // First attempt: report at once rather than retrying against a hub that is down
      // or a key that is wrong.
      this.fail(err.code || "transport_failed", err.message);
    }
  }

  async connectOnce() {
    const { transport, hubUrl, apiKey, config } = this.settings;
    const adapter = createAdapter(transport, { hubUrl, apiKey });
    const epoch = ++this.epoch;
    this.adapter = adapter;
    this.live = false;
    this.sessionClosed = false;
    adapter.onEvent((msg) => {
      if (this.adapter === adapter) this.handleEvent(epoch, msg);
    });
    adapter.onState((state, info) => {
      if (this.adapter === adapter) this.handleState(state, info);
    });
    const resume =
      this.resume && RESUMABLE.has(transport)
        ? { ...this.resume, audioFromBytes: this.stream.oldest }
        : null;
    await adapter.connect(config, resume);
    if (this.adapter !== adapter) return;
    // HTTP+SSE: the session exists once connect() resolves (its session.started may come later).
    if (transport === "sse") this.goLive(false);
  }

  /** Audio may flow on this connection. A new session starts its byte stream at the first
   *  byte no final covers; a resumed one continues where the hub says. */
  goLive(resumed, resumeFrom) {
    if (!resumed) this.stream.rebase();
    else if (typeof resumeFrom === "number" && resumeFrom >= 0) this.stream.rewind(resumeFrom);
    // Without resume_from_bytes (an older hub) nothing is re-sent: the stream goes on.
    this.live = true;
    this.pump();
  }

  handleFrame(buf) {
    if (!this.running || this.stopping) return;
    if (this.stream.capture(buf)) {
      if (this.paused && this.stream.heldBytes < this.stream.maxHeld / 2) this.paused = false;
    } else {
      this.paused = true;
      this.pausedBytes += buf.byteLength;
    }
    this.pump();
  }

  /** Sends held-back audio while the transport's own buffer has room. */
  pump() {
    const a = this.adapter;
    if (a && this.live && a.state === "open" && !this.sessionClosed) {
      while (this.stream.heldBytes > 0 && a.backlogBytes() < MAX_BACKLOG_BYTES) {
        const piece = this.stream.next();
        if (!piece) break;
        a.sendAudio(piece);
      }
      if (this.stream.heldBytes > 0 && !this.pumpTimer) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = null;
          this.pump();
        }, PUMP_MS);
      }
    }
    this.showBacklog();
  }

  /** "Holding back N s of audio" while the hub (or the network) is slower than the microphone. */
  showBacklog() {
    const el = this.backlogEl;
    if (!el) return;
    const held = this.running ? this.stream.heldBytes : 0;
    let state = "none";
    let text = "";
    if (this.paused) {
      state = "paused";
      text =
        `Paused: ${(held / BYTES_PER_SECOND).toFixed(1)} s of audio is waiting to be sent; ` +
        `${(this.pausedBytes / BYTES_PER_SECOND).toFixed(1)} s of speech was not captured meanwhile.`;
    } else if (held >= SHOW_HELD_BYTES) {
      state = "held";
      text = `Holding back ${(held / BYTES_PER_SECOND).toFixed(1)} s of audio until the hub catches up.`;
    }
    if (el.dataset.state === state && el.textContent === text) return;
    el.dataset.state = state;
    el.dataset.heldBytes = String(held);
    el.textContent = text;
    el.hidden = state === "none";
  }

  handleEvent(epoch, msg) {
    if (this.onHubEvent) this.onHubEvent(msg);
    switch (msg.type) {
      case "session.started":
      case "session.resumed": {
        // Count the reconnect attempts as successful only once the session has stayed up a
        // while: a hub that accepts and then fails every session must not retry forever.
        clearTimeout(this.healthyTimer);
        this.healthyTimer = setTimeout(() => {
          if (this.adapter && !this.sessionClosed) this.attempts = 0;
        }, HEALTHY_AFTER_MS);
        const resumed = msg.type === "session.resumed";
        if (!resumed && msg.session_id !== this.sessionId) {
          this.sessionEpoch += 1;
          this.resume = msg.resume_token ? { token: msg.resume_token, lastSegmentId: null } : null;
        } else {
          this.resumes += 1;
        }
        this.sessionId = msg.session_id;
        if (!this.stopping) {
          const how = resumed ? "resumed" : "session";
          this.connection.set("live", `Live (${how} ${msg.session_id || "?"})`);
        }
        if (msg.config) {
          this.vad.setSession(msg.config.vad);
          this.wakeword.setSession(msg.config.wakeword);
        }
        if (this.settings.transport !== "sse" || !this.live) this.goLive(resumed, msg.resume_from_bytes);
        break;
      }
      case "session.handover":
        // The hub drains (a rolling restart): everything it had for us came before this; the
        // connection closes next and the session continues on another node, resumed at once.
        // Nothing more is sent here: what no final confirmed is re-sent after the resume.
        this.live = false;
        this.handingOver = true;
        this.handovers += 1;
        if (msg.resume_token && (!this.resume || this.resume.token !== msg.resume_token)) {
          this.resume = { token: msg.resume_token, lastSegmentId: this.resume ? this.resume.lastSegmentId : null };
        }
        if (!this.stopping) this.connection.set("reconnecting", STATE_TEXT.handover);
        break;
      case "transcript.partial":
        this.transcript.partial(this.sessionEpoch, msg);
        break;
      case "transcript.final":
        this.attempts = 0;
        if (this.clearErrorOnFinal) {
          this.clearErrorOnFinal = false;
          this.errors.clear();
        }
        this.transcript.final(this.sessionEpoch, msg);
        this.confirmed(msg);
        break;
      case "vad.speech_started":
      case "vad.speech_ended":
        this.vad.handle(msg);
        break;
      case "wakeword.detected":
        this.wakeword.handle(msg);
        break;
      case "error":
        if (msg.code === "resume_failed") {
          // The session is gone (expired, or closed by the hub): start a new one on this
          // connection; the audio no final covered is sent to it.
          this.resume = null;
          if (this.adapter) this.adapter.start(this.settings.config);
          break;
        }
        if (typeof msg.segment_id === "number") this.confirmed(msg);
        this.lastError = msg;
        this.errors.show(msg.code, msg.message);
        break;
      case "session.closed":
        this.sessionClosed = true;
        this.resume = null;
        if (this.endResolve) this.endResolve();
        break;
      default:
        break;
    }
  }

  /** A final (or the error that replaces one) covers the audio up to its end. */
  confirmed(msg) {
    if (this.resume && typeof msg.segment_id === "number") {
      const last = this.resume.lastSegmentId;
      this.resume.lastSegmentId = last === null ? msg.segment_id : Math.max(last, msg.segment_id);
    }
    if (typeof msg.end === "number") this.stream.confirm(msg.end);
  }

  handleState(state, info) {
    if (state === "open" && !this.stopping) this.connection.set("open");
    if (state !== "closed") return;
    this.live = false;
    if (this.endResolve) this.endResolve();
    if (!this.running || this.stopping) return;
    if (this.handingOver || info.code === "handover") {
      // Not a failure: the hub asked us to continue elsewhere. The balancer in front of the
      // hub URL sends the new connection to a live node; no back-off, no error shown.
      this.handingOver = false;
      this.scheduleReconnect(true);
      return;
    }
    // The connection ended while the user still wants a session. The hub's own error event
    // (if one came) names the reason; else the close code / reason does.
    const fatal = this.lastError && this.lastError.fatal !== false ? this.lastError.code : undefined;
    const code = fatal || info.code;
    if (code && NOT_RETRYABLE.has(code)) {
      this.fail(code, this.lastError ? this.lastError.message : info.message);
      return;
    }
    if (code && !fatal && info.closeCode !== undefined) this.errors.show(code, info.message);
    // A retryable reason stays on screen until words flow again.
    if (code) this.clearErrorOnFinal = true;
    if (!info.unexpected && !this.sessionClosed && !code) return;
    this.scheduleReconnect();
  }

  /** Reconnect after a back-off; `now`: at once, not counted as a failed attempt (a hand-over). */
  scheduleReconnect(now = false) {
    if (this.retryTimer) return;
    if (!now) this.attempts += 1;
    if (this.attempts > MAX_ATTEMPTS) {
      this.fail("gave_up", `gave up after ${MAX_ATTEMPTS} attempts`);
      return;
    }
    const delay = now ? 0 : Math.min(8000, 500 * 2 ** (this.attempts - 1)) + Math.random() * 250;
    if (!now) {
      this.connection.set(
        "reconnecting",
        `Connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempts} of ${MAX_ATTEMPTS})…`,
      );
    }
    this.retryTimer = setTimeout(async () => {
      this.retryTimer = null;
      if (!this.running || this.stopping) return;
      const which = this.attempts ? ` (attempt ${this.attempts} of ${MAX_ATTEMPTS})` : "";
      this.connection.set("connecting", `Reconnecting${which}…`);
      this.lastError = null;
      try {
        await this.connectOnce();
      } catch (err) {
        if (!this.running || this.stopping) return;
        if (NOT_RETRYABLE.has(err.code)) this.fail(err.code, err.message);
        else this.scheduleReconnect();
      }
    }, delay);
  }

  /** Stop after an error: release everything, keep the error on screen. */
  async fail(code, message) {
    this.errors.show(code, message);
    await this.teardown();
    this.connection.set("failed");
  }

  async teardown() {
    clearTimeout(this.healthyTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    const adapter = this.adapter;
    this.adapter = null;
    this.live = false;
    if (adapter) adapter.close();
    await this.audio.stop();
    this.stream.reset();
    this.paused = false;
    this.running = false;
    this.stopping = false;
    this.resume = null;
    this.showBacklog();
    this.transcript.clearPartial();
    this.vad.setIdle();
    this.wakeword.setIdle();
    this.onRunningChange(false);
  }

  /** Stop the microphone, send what is held back, flush the session (its last finals
   *  arrive), then disconnect. */
  async stop() {
    if (!this.running || this.stopping) return;
    const adapter = this.adapter;
    const audioStopped = this.audio.stop(); // its last partial frame still reaches handleFrame
    await audioStopped;
    this.stopping = true;
    this.connection.set("finishing");
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (adapter && adapter.state === "open") {
      await this.drain(adapter);
      const closed = new Promise((resolve) => {
        this.endResolve = resolve;
        setTimeout(resolve, END_TIMEOUT_MS);
      });
      try {
        await adapter.end();
      } catch (_) {}
      if (!this.sessionClosed && adapter.state !== "closed") await closed;
      this.endResolve = null;
    }
    await this.teardown();
    this.connection.set("idle");
  }

  /** Hand every held-back byte to the transport before session.end (bounded by END_TIMEOUT_MS). */
  async drain(adapter) {
    const deadline = Date.now() + END_TIMEOUT_MS;
    while (this.stream.heldBytes > 0 && adapter.state === "open" && Date.now() < deadline) {
      if (this.live) {
        const piece = adapter.backlogBytes() < MAX_BACKLOG_BYTES ? this.stream.next() : null;
        if (piece) {
          adapter.sendAudio(piece);
          continue;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, PUMP_MS));
    }
    this.showBacklog();
  }
}

export { TransportError };
