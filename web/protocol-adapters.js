// One interface, three transports of the ASR Hub wire contract (docs/protocol.md):
//
//   const a = createAdapter("websocket" | "socketio" | "sse", {hubUrl, apiKey});
//   a.onEvent(msg => ...)          every hub -> client message, exactly as sent ({type, ...})
//   a.onState((state, info) => …)  "connecting" | "open" | "closing" | "closed";
//                                  on "closed", info = {unexpected: bool, code?, message?}
//   await a.connect(config, resume) opens the transport and sends session.start (with
//                                  "resume": true), or session.resume when `resume` =
//                                  {token, lastSegmentId, audioFromBytes} (WebSocket, Socket.io)
//                                  (rejects with a TransportError carrying a `code`)
//   a.start(config)                session.start on an open connection (after resume_failed)
//   a.sendAudio(arrayBuffer)       one binary frame (pcm_s16le unless the config says otherwise);
//                                  callers keep a.backlogBytes() under MAX_BACKLOG_BYTES
//   a.backlogBytes()               audio handed to the transport but not yet on the wire
//   await a.end()                  session.end: the hub flushes, sends finals, then session.closed
//   a.close()                      drop the connection now

export const HUB_EVENT_TYPES = [
  "session.started",
  "session.resumed",
  "session.handover",
  "vad.speech_started",
  "vad.speech_ended",
  "wakeword.detected",
  "transcript.partial",
  "transcript.final",
  "error",
  "pong",
  "session.closed",
];

export const TRANSPORTS = {
  websocket: "WebSocket",
  socketio: "Socket.io",
  sse: "HTTP + Server-Sent Events",
};

const SOCKET_IO_MODULE = "/vendor/socket.io/socket.io.esm.min.js";

/** Audio a transport may hold unsent (5 s of 16 kHz PCM16): above it the page holds audio
 *  back itself, visibly, instead of letting the browser's send buffer grow without bound. */
export const MAX_BACKLOG_BYTES = 16000 * 2 * 5;

/** The hub's error codes (docs/protocol.md, "errors"); a close reason that is one of them
 *  names the error exactly. */
export const ERROR_CODES = new Set([
  "bad_message",
  "bad_audio",
  "unknown_provider",
  "provider_failed",
  "capacity",
  "unauthorized",
  "slow_consumer",
  "too_large",
  "timeout",
  "resume_failed",
]);

/** WebSocket close codes the hub uses (transports/websocket.py, docs/protocol.md) when the
 *  reason does not name an error code. 1008 is a policy close for several errors
 *  (slow_consumer, bad_message, …): it is never read as "wrong key" by itself. */
export const CLOSE_CODES = {
  1001: "shutdown",
  1008: "policy",
  1009: "too_large",
  1011: "provider_failed",
  1013: "capacity",
  4401: "unauthorized",
  4408: "timeout",
  4409: "resumed",
  1012: "handover",
};

/** The error a WebSocket close stands for, or undefined for a normal close or a drop. */
export function closeCode(code, reason) {
  const named = (reason || "").trim();
  if (ERROR_CODES.has(named) || ["shutdown", "resumed", "handover"].includes(named)) return named;
  return CLOSE_CODES[code];
}

/** A failure to connect or to talk to the hub. `code` is a wire-contract error code
 *  (unauthorized, capacity, …) or one of the page's own: network, transport_failed. */
export class TransportError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/** The hub's base URL ("" or a full http(s) URL) without a trailing slash. */
export function hubBase(hubUrl) {
  const raw = (hubUrl || "").trim();
  if (!raw) return window.location.origin;
  const url = new URL(raw, window.location.href);
  return (url.origin + url.pathname).replace(/\/+$/, "");
}

function httpUrl(base, path, params = {}) {
  const url = new URL(base + path);
  for (const [k, v] of Object.entries(params)) if (v) url.searchParams.set(k, v);
  return url.toString();
}

function wsUrl(base, path, params = {}) {
  return httpUrl(base, path, params).replace(/^http/, "ws");
}

export function authHeaders(apiKey, extra = {}) {
  const headers = { ...extra };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  return headers;
}

/** Reads an error body in any of the shapes a hub may use:
 *  {"type":"error","code":…,"message":…} | {"error":{"code"|"type":…,"message":…}} | {"code":…}. */
export async function readErrorBody(response) {
  let code = response.status === 401 || response.status === 403 ? "unauthorized" : null;
  if (!code && (response.status === 429 || response.status === 503)) code = "capacity";
  if (!code && response.status === 413) code = "too_large";
  if (!code && response.status === 408) code = "timeout";
  let message = `HTTP ${response.status} ${response.statusText || ""}`.trim();
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const err = body && typeof body.error === "object" && body.error ? body.error : body;
      if (err && typeof err.code === "string") code = code || err.code;
      else if (err && typeof err.type === "string" && err.type !== "error") code = code || err.type;
      if (err && typeof err.message === "string") message = err.message;
    } catch (_) {
      if (text && text.length < 300) message = text;
    }
  } catch (_) {}
  return new TransportError(code || "http_error", message);
}

/** After a failed connection attempt the browser hides the reason (a refused WebSocket
 *  or EventSource handshake looks like a network error). Ask the hub over plain HTTP. */
export async function diagnose(base, apiKey) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 4000);
  try {
    const resp = await fetch(httpUrl(base, "/v1/models"), {
      headers: authHeaders(apiKey),
      cache: "no-store",
      signal: controller.signal,
    });
    if (resp.status === 401 || resp.status === 403) {
      return new TransportError("unauthorized", "The hub rejected the API key.");
    }
    return null; // the hub is up and accepts the key: the reason is elsewhere
  } catch (_) {
    return new TransportError("network", `Cannot reach the hub at ${base}.`);
  } finally {
    clearTimeout(timer);
  }
}

class BaseAdapter {
  constructor({ hubUrl = "", apiKey = "" } = {}) {
    this.base = hubBase(hubUrl);
    this.apiKey = apiKey;
    this.eventListeners = new Set();
    this.stateListeners = new Set();
    this.state = "idle";
    this.sessionClosed = false; // session.closed seen
    this.userClosing = false; // close()/end() called by the page
  }

  onEvent(cb) {
    this.eventListeners.add(cb);
    return () => this.eventListeners.delete(cb);
  }

  onState(cb) {
    this.stateListeners.add(cb);
    return () => this.stateListeners.delete(cb);
  }

  setState(state, info = {}) {
    if (this.state === "closed") return; // closed is final
    this.state = state;
    for (const cb of this.stateListeners) cb(state, info);
  }

  emitEvent(msg) {
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    if (msg.type === "session.closed") this.sessionClosed = true;
    for (const cb of this.eventListeners) cb(msg);
  }

  /** Reports the end of the connection once; unexpected unless the page or the hub ended it. */
  finish(extra = {}) {
    if (this.state === "closed") return;
    const unexpected = !this.userClosing && !this.sessionClosed;
    this.setState("closed", { unexpected, ...extra });
  }

  backlogBytes() {
    return 0;
  }

  static opening(config, resume) {
    if (resume && resume.token) {
      const msg = { type: "session.resume", token: resume.token, last_segment_id: resume.lastSegmentId };
      if (resume.audioFromBytes > 0) msg.audio_from_bytes = resume.audioFromBytes;
      return msg;
    }
    return { type: "session.start", config, resume: true };
  }

  async failure(fallbackCode, fallbackMessage) {
    const diagnosed = await diagnose(this.base, this.apiKey);
    return diagnosed || new TransportError(fallbackCode, fallbackMessage);
  }
}

// ---------------------------------------------------------------- WebSocket

export class WebSocketAdapter extends BaseAdapter {
  connect(config, resume) {
    this.setState("connecting");
    return new Promise((resolve, reject) => {
      let opened = false;
      let ws;
      try {
        ws = new WebSocket(wsUrl(this.base, "/v1/stream", { token: this.apiKey }));
      } catch (err) {
        this.finish();
        reject(new TransportError("network", `Bad hub address: ${err.message}`));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      ws.onopen = () => {
        opened = true;
        ws.send(JSON.stringify(BaseAdapter.opening(config, resume)));
        this.setState("open");
        resolve();
      };
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") return; // the hub sends JSON text only
        try {
          this.emitEvent(JSON.parse(e.data));
        } catch (_) {}
      };
      ws.onclose = async (e) => {
        if (!opened) {
          const err = await this.failure("transport_failed", "The WebSocket connection failed.");
          this.finish({ code: err.code });
          reject(err);
          return;
        }
        this.finish({ code: closeCode(e.code, e.reason), closeCode: e.code, message: e.reason || undefined });
      };
      ws.onerror = () => {}; // onclose follows and carries the outcome
    });
  }

  sendAudio(buffer) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(buffer);
  }

  start(config) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(BaseAdapter.opening(config, null)));
    }
  }

  backlogBytes() {
    return this.ws ? this.ws.bufferedAmount : 0;
  }

  async end() {
    this.userClosing = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "session.end" }));
      this.setState("closing");
    }
  }

  ping(id) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ type: "ping", id }));
    }
  }

  close() {
    this.userClosing = true;
    if (this.ws) {
      try {
        this.ws.close(1000, "client closed");
      } catch (_) {}
    }
    this.finish();
  }
}

// ---------------------------------------------------------------- Socket.io

let ioModulePromise = null;
function loadSocketIo() {
  if (!ioModulePromise) {
    ioModulePromise = import(SOCKET_IO_MODULE).catch((err) => {
      ioModulePromise = null;
      throw new TransportError(
        "client_missing",
        `The Socket.io client could not be loaded from ${SOCKET_IO_MODULE} (${err.message}).`,
      );
    });
  }
  return ioModulePromise;
}

export class SocketIoAdapter extends BaseAdapter {
  async connect(config, resume) {
    this.setState("connecting");
    let mod;
    try {
      mod = await loadSocketIo();
    } catch (err) {
      this.finish();
      throw err;
    }
    const io = mod.io || mod.default;
    return new Promise((resolve, reject) => {
      let connected = false;
      const socket = io(this.base, {
        path: "/socket.io/",
        auth: this.apiKey ? { token: this.apiKey } : {},
        transports: ["websocket", "polling"],
        tryAllTransports: true,
        reconnection: false, // the UI manager reconnects, with back-off, for every transport
        forceNew: true,
        timeout: 8000,
      });
      this.socket = socket;
      for (const type of HUB_EVENT_TYPES) {
        socket.on(type, (payload) => {
          const msg = payload && typeof payload === "object" ? payload : {};
          this.emitEvent({ ...msg, type });
        });
      }
      socket.on("connect", () => {
        connected = true;
        const opening = BaseAdapter.opening(config, resume);
        socket.emit(opening.type, opening);
        this.setState("open");
        resolve();
      });
      socket.on("connect_error", async (err) => {
        if (connected) return;
        const data = (err && err.data) || {};
        const text = `${(err && err.message) || ""} ${data.code || ""} ${data.message || ""}`;
        let failure;
        if (/unauthori[sz]ed|401|forbidden/i.test(text)) {
          failure = new TransportError("unauthorized", data.message || err.message);
        } else if (/capacity/i.test(text)) {
          failure = new TransportError("capacity", data.message || err.message);
        } else {
          failure = await this.failure("transport_failed", `Socket.io: ${err && err.message}`);
        }
        socket.close();
        this.finish({ code: failure.code });
        reject(failure);
      });
      socket.on("disconnect", (reason) => {
        if (!connected) return;
        // The hub names its reason in an error event first (slow_consumer, resumed, …).
        const byHub = reason === "io server disconnect";
        this.finish({ code: byHub ? "server_disconnect" : undefined, closeCode: byHub ? 0 : undefined, message: reason });
      });
    });
  }

  sendAudio(buffer) {
    if (this.socket && this.socket.connected) this.socket.emit("audio", buffer);
  }

  start(config) {
    if (this.socket && this.socket.connected) {
      this.socket.emit("session.start", BaseAdapter.opening(config, null));
    }
  }

  /** Bytes engine.io has not written yet: its write buffer (all transports) plus the
   *  WebSocket's own send buffer (websocket transport). */
  backlogBytes() {
    const engine = this.socket && this.socket.io && this.socket.io.engine;
    if (!engine) return 0;
    let bytes = 0;
    for (const packet of engine.writeBuffer || []) {
      const data = packet && packet.data;
      if (data && typeof data.byteLength === "number") bytes += data.byteLength;
      else if (typeof data === "string") bytes += data.length;
    }
    const ws = engine.transport && engine.transport.ws;
    if (ws && typeof ws.bufferedAmount === "number") bytes += ws.bufferedAmount;
    return bytes;
  }

  async end() {
    this.userClosing = true;
    if (this.socket && this.socket.connected) {
      this.socket.emit("session.end", { type: "session.end" });
      this.setState("closing");
    }
  }

  ping(id) {
    if (this.socket && this.socket.connected) this.socket.emit("ping", { type: "ping", id });
  }

  close() {
    this.userClosing = true;
    if (this.socket) this.socket.close();
    this.finish();
  }
}

// ---------------------------------------------------------------- HTTP + SSE

const MAX_POST_BYTES = 64 * 1024; // batch small frames up to this size per POST
const RESUME_GRACE_MS = 5000; // how long a dropped event stream may take to come back

export class SseAdapter extends BaseAdapter {
  constructor(opts) {
    super(opts);
    this.queue = [];
    this.queuedBytes = 0;
    this.pumping = null;
    this.abort = new AbortController();
  }

  async connect(config) {
    this.setState("connecting");
    let resp;
    try {
      resp = await fetch(httpUrl(this.base, "/v1/sessions"), {
        method: "POST",
        headers: authHeaders(this.apiKey, { "Content-Type": "application/json" }),
        body: JSON.stringify({ config }),
        signal: this.abort.signal,
      });
    } catch (err) {
      this.finish();
      throw new TransportError("network", `Cannot reach the hub at ${this.base}.`);
    }
    if (!resp.ok) {
      const err = await readErrorBody(resp);
      this.finish({ code: err.code });
      throw err;
    }
    const body = await resp.json();
    this.sessionId = body.session_id;
    if (!this.sessionId) {
      this.finish();
      throw new TransportError("bad_message", "The hub did not return a session_id.");
    }

    await new Promise((resolve, reject) => {
      let opened = false;
      const url = httpUrl(this.base, `/v1/sessions/${encodeURIComponent(this.sessionId)}/events`, {
        token: this.apiKey,
      });
      const es = new EventSource(url);
      this.es = es;
      const dispatch = (type) => (e) => {
        try {
          const msg = JSON.parse(e.data);
          this.emitEvent(msg && typeof msg === "object" ? { type, ...msg } : { type });
        } catch (_) {}
        if (type === "session.closed") {
          es.close();
          this.finish();
        }
      };
      for (const type of HUB_EVENT_TYPES) es.addEventListener(type, dispatch(type));
      es.onmessage = (e) => {
        // events without an `event:` line: the type is inside the JSON
        try {
          const msg = JSON.parse(e.data);
          if (msg && msg.type) dispatch(msg.type)(e);
        } catch (_) {}
      };
      es.onopen = () => {
        if (this.resumeTimer) {
          clearTimeout(this.resumeTimer);
          this.resumeTimer = null;
        }
        if (opened) return;
        opened = true;
        this.setState("open");
        resolve();
      };
      es.onerror = async () => {
        if (this.sessionClosed || this.userClosing) {
          es.close();
          this.finish();
          return;
        }
        if (!opened) {
          es.close();
          const err = await this.failure("transport_failed", "The event stream could not be opened.");
          this.finish({ code: err.code });
          reject(err);
          return;
        }
        // The hub keeps a session's events while its stream reconnects, and EventSource
        // reconnects by itself: give it a moment before giving the session up.
        if (es.readyState === EventSource.CONNECTING && !this.resumeTimer) {
          this.resumeTimer = setTimeout(() => {
            this.resumeTimer = null;
            if (es.readyState !== EventSource.OPEN) this.dropConnection();
          }, RESUME_GRACE_MS);
          return;
        }
        if (es.readyState === EventSource.CLOSED) this.dropConnection();
      };
    });
  }

  /** Never drops audio: the caller keeps backlogBytes() under MAX_BACKLOG_BYTES and holds the
   *  rest back itself (dropping the oldest would shift every later stream time). */
  sendAudio(buffer) {
    if (this.state !== "open" || !this.sessionId) return;
    this.queue.push(buffer);
    this.queuedBytes += buffer.byteLength;
    if (!this.pumping) this.pumping = this.pump().finally(() => (this.pumping = null));
  }

  /** Posts queued frames one request at a time (so order is kept), batching small frames. */
  async pump() {
    while (this.queue.length && this.state !== "closed") {
      const parts = [];
      let size = 0;
      while (this.queue.length && (size === 0 || size + this.queue[0].byteLength <= MAX_POST_BYTES)) {
        const part = this.queue.shift();
        parts.push(part);
        size += part.byteLength;
      }
      this.queuedBytes -= size;
      this.inFlightBytes = size;
      const body = new Uint8Array(size);
      let offset = 0;
      for (const p of parts) {
        body.set(new Uint8Array(p), offset);
        offset += p.byteLength;
      }
      try {
        const resp = await fetch(this.sessionUrl("audio"), {
          method: "POST",
          headers: authHeaders(this.apiKey, { "Content-Type": "application/octet-stream" }),
          body,
          signal: this.abort.signal,
        });
        if (!resp.ok) {
          const err = await readErrorBody(resp);
          this.emitEvent({ type: "error", code: err.code, message: err.message, fatal: resp.status !== 429 });
          if (resp.status === 404 || resp.status === 401 || resp.status === 410) this.dropConnection();
        }
      } catch (err) {
        this.inFlightBytes = 0;
        if (this.state === "closed" || this.userClosing) return;
        this.dropConnection();
        return;
      }
      this.inFlightBytes = 0;
    }
  }

  backlogBytes() {
    return this.queuedBytes + (this.inFlightBytes || 0);
  }

  start() {} // an HTTP session is created by connect(); there is nothing to restart

  sessionUrl(what) {
    const path = `/v1/sessions/${encodeURIComponent(this.sessionId)}`;
    return httpUrl(this.base, what ? `${path}/${what}` : path);
  }

  dropConnection() {
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = null;
    if (this.es) this.es.close();
    this.queue = [];
    this.queuedBytes = 0;
    this.finish();
  }

  async end() {
    this.userClosing = true;
    if (!this.sessionId || this.state === "closed") return;
    this.setState("closing");
    if (this.pumping) await this.pumping;
    try {
      const resp = await fetch(this.sessionUrl("end"), {
        method: "POST",
        headers: authHeaders(this.apiKey),
        signal: this.abort.signal,
      });
      if (!resp.ok && resp.status !== 404) {
        const err = await readErrorBody(resp);
        this.emitEvent({ type: "error", code: err.code, message: err.message, fatal: true });
      }
    } catch (_) {
      this.dropConnection();
    }
  }

  close() {
    this.userClosing = true;
    this.queue = [];
    this.queuedBytes = 0;
    if (this.resumeTimer) clearTimeout(this.resumeTimer);
    this.resumeTimer = null;
    if (this.es) this.es.close();
    this.abort.abort();
    if (this.sessionId && !this.sessionClosed) {
      // Free the hub's session now rather than at its idle timeout (best effort).
      fetch(this.sessionUrl(""), { method: "DELETE", headers: authHeaders(this.apiKey), keepalive: true }).catch(
        () => {},
      );
    }
    this.finish();
  }
}

export function createAdapter(transport, opts) {
  switch (transport) {
    case "websocket":
      return new WebSocketAdapter(opts);
    case "socketio":
      return new SocketIoAdapter(opts);
    case "sse":
      return new SseAdapter(opts);
    default:
      throw new TransportError("bad_transport", `Unknown transport: ${transport}`);
  }
}
