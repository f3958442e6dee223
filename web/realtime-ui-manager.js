// The live session on the page: connects a transport adapter, feeds it microphone
// frames, renders the transcript (finals in segment order, partial replaced in
// place), the connection state and errors in words, and reconnects with back-off
// when the connection drops during a session.

import { createAdapter, TransportError } from "./protocol-adapters.js";

// ---------------------------------------------------------------- errors in words

const SENTENCES = {
  unauthorized: "The hub rejected the API key. Enter a valid key in “API key” and press Start again.",
  capacity: "The hub is busy: it has reached its limit of sessions. Try again in a moment.",
  unknown_provider: "The hub has no such speech engine. Choose another one in “Provider”.",
  bad_audio: "The hub could not decode the audio it received.",
  bad_message: "The hub did not understand a message from this page.",
  provider_failed: "The speech engine failed while transcribing; some words may be missing.",
  slow_consumer: "The connection could not keep up with the results, so the hub closed it.",
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

function fmtTime(t) {
  return typeof t === "number" && isFinite(t) ? `${t.toFixed(2)} s` : "?";
}

export class TranscriptView {
  constructor(finalEl, partialEl) {
    this.finalEl = finalEl;
    this.partialEl = partialEl;
    this.clear();
  }

  clear() {
    this.segments = []; // {key, epoch, order, text, el}
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

  partial(epoch, msg) {
    const key = `${epoch}:${msg.segment_id}`;
    if (this.segments.some((s) => s.key === key)) return; // already final
    this.partialKey = key;
    this.partialEl.textContent = msg.text || "";
    this.partialEl.title = `Partial, ${fmtTime(msg.start)} to ${fmtTime(msg.end)}`;
  }

  final(epoch, msg) {
    const key = `${epoch}:${msg.segment_id}`;
    const text = (msg.text || "").trim();
    let seg = this.segments.find((s) => s.key === key);
    if (!seg) {
      seg = { key, epoch, order: TranscriptView.order(msg.segment_id, this.arrival), seq: this.arrival++ };
      seg.el = document.createElement("span");
      seg.el.className = "segment";
      seg.el.dataset.segmentId = String(msg.segment_id);
      // insert in (epoch, segment order) position
      let i = this.segments.length;
      while (
        i > 0 &&
        (this.segments[i - 1].epoch > epoch ||
          (this.segments[i - 1].epoch === epoch && this.segments[i - 1].order > seg.order))
      ) {
        i--;
      }
      this.segments.splice(i, 0, seg);
    }
    seg.text = text;
    seg.el.textContent = text;
    const who = [msg.provider, msg.language].filter(Boolean).join(", ");
    seg.el.title = `${fmtTime(msg.start)} to ${fmtTime(msg.end)}${who ? ` (${who})` : ""}`;
    this.render();
    if (this.partialKey === key || this.partialKey === null) {
      this.partialEl.textContent = "";
      this.partialKey = null;
    }
  }

  clearPartial() {
    this.partialEl.textContent = "";
    this.partialKey = null;
  }

  render() {
    const nodes = [];
    for (const seg of this.segments) {
      if (!seg.text) continue;
      if (nodes.length) nodes.push(document.createTextNode(" "));
      nodes.push(seg.el);
    }
    this.finalEl.replaceChildren(...nodes);
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
const PENDING_FRAMES = 50; // ~5 s of audio kept while (re)connecting
const END_TIMEOUT_MS = 20000; // wait this long for session.closed after session.end
const HEALTHY_AFTER_MS = 10000; // a session up this long resets the reconnect back-off

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
   */
  constructor(o) {
    Object.assign(this, o);
    this.running = false;
    this.stopping = false;
    this.adapter = null;
    this.pending = [];
    this.epoch = 0;
    this.attempts = 0;
    this.retryTimer = null;
    this.lastError = null;
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
    this.pending = [];
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
    this.sessionClosed = false;
    adapter.onEvent((msg) => {
      if (this.adapter === adapter) this.handleEvent(epoch, msg);
    });
    adapter.onState((state, info) => {
      if (this.adapter === adapter) this.handleState(state, info);
    });
    await adapter.connect(config);
    if (this.adapter !== adapter) return;
    for (const buf of this.pending.splice(0)) adapter.sendAudio(buf);
  }

  handleFrame(buf) {
    if (!this.running) return;
    const a = this.adapter;
    if (a && a.state === "open" && !this.sessionClosed) {
      a.sendAudio(buf);
    } else if (!this.stopping) {
      this.pending.push(buf);
      if (this.pending.length > PENDING_FRAMES) this.pending.shift();
    }
  }

  handleEvent(epoch, msg) {
    if (this.onHubEvent) this.onHubEvent(msg);
    switch (msg.type) {
      case "session.started":
        // Count the reconnect attempts as successful only once the session has stayed up a
        // while: a hub that accepts and then fails every session must not retry forever.
        clearTimeout(this.healthyTimer);
        this.healthyTimer = setTimeout(() => {
          if (this.adapter && !this.sessionClosed) this.attempts = 0;
        }, HEALTHY_AFTER_MS);
        this.sessionId = msg.session_id;
        if (!this.stopping) this.connection.set("live", `Live (session ${msg.session_id || "?"})`);
        if (msg.config) {
          this.vad.setSession(msg.config.vad);
          this.wakeword.setSession(msg.config.wakeword);
        }
        break;
      case "transcript.partial":
        this.transcript.partial(epoch, msg);
        break;
      case "transcript.final":
        this.attempts = 0;
        this.transcript.final(epoch, msg);
        break;
      case "vad.speech_started":
      case "vad.speech_ended":
        this.vad.handle(msg);
        break;
      case "wakeword.detected":
        this.wakeword.handle(msg);
        break;
      case "error":
        this.lastError = msg;
        this.errors.show(msg.code, msg.message);
        break;
      case "session.closed":
        this.sessionClosed = true;
        if (this.endResolve) this.endResolve();
        break;
      default:
        break;
    }
  }

  handleState(state, info) {
    if (state === "open" && !this.stopping) this.connection.set("open");
    if (state !== "closed") return;
    if (this.endResolve) this.endResolve();
    if (!this.running || this.stopping) return;
    // The connection ended while the user still wants a session.
    const code = (this.lastError && this.lastError.fatal !== false && this.lastError.code) || info.code;
    if (code && NOT_RETRYABLE.has(code)) {
      this.fail(code, this.lastError ? this.lastError.message : info.message);
      return;
    }
    if (!info.unexpected && !this.sessionClosed) return;
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.retryTimer) return;
    this.attempts += 1;
    if (this.attempts > MAX_ATTEMPTS) {
      this.fail("gave_up", `gave up after ${MAX_ATTEMPTS} attempts`);
      return;
    }
    const delay = Math.min(8000, 500 * 2 ** (this.attempts - 1)) + Math.random() * 250;
    this.connection.set(
      "reconnecting",
      `Connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s (attempt ${this.attempts} of ${MAX_ATTEMPTS})…`,
    );
    this.retryTimer = setTimeout(async () => {
      this.retryTimer = null;
      if (!this.running || this.stopping) return;
      this.connection.set("connecting", `Reconnecting (attempt ${this.attempts} of ${MAX_ATTEMPTS})…`);
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
    const adapter = this.adapter;
    this.adapter = null;
    if (adapter) adapter.close();
    await this.audio.stop();
    this.pending = [];
    this.running = false;
    this.stopping = false;
    this.transcript.clearPartial();
    this.vad.setIdle();
    this.wakeword.setIdle();
    this.onRunningChange(false);
  }

  /** Stop the microphone, flush the session (its last finals arrive), then disconnect. */
  async stop() {
    if (!this.running || this.stopping) return;
    this.stopping = true;
    this.connection.set("finishing");
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    // Flush the last partial frame to the hub before session.end.
    const adapter = this.adapter;
    const audioStopped = this.audio.stop();
    await audioStopped;
    if (adapter && adapter.state === "open") {
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
}

export { TransportError };
