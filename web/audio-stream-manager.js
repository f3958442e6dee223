// Microphone capture: getUserMedia -> AudioWorklet (pcm-worklet.js) -> 16 kHz mono
// Int16 PCM frames (~100 ms each) as ArrayBuffers, plus a level-meter value.

export const TARGET_RATE = 16000;
export const FRAME_MS = 100;

/** An error with a stable `code` the UI maps to a sentence. */
export class AudioError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class AudioStreamManager {
  /** @param {{nativeRate?: boolean}} [opts] nativeRate: capture at the device rate and
   *  always resample in the worklet (also reachable with ?capture=native, for testing). */
  constructor(opts = {}) {
    this.nativeRate = !!opts.nativeRate;
    this.context = null;
    this.stream = null;
    this.source = null;
    this.node = null;
    this.frameListeners = new Set();
    this.levelListeners = new Set();
    this.level = 0;
  }

  /** cb(ArrayBuffer) for each Int16 PCM frame. Returns an unsubscribe function. */
  onFrame(cb) {
    this.frameListeners.add(cb);
    return () => this.frameListeners.delete(cb);
  }

  /** cb(level 0..1, RMS) once per frame. Returns an unsubscribe function. */
  onLevel(cb) {
    this.levelListeners.add(cb);
    return () => this.levelListeners.delete(cb);
  }

  get running() {
    return this.node !== null;
  }

  /** The AudioContext's own rate (before the worklet resamples to 16 kHz). */
  get captureRate() {
    return this.context ? this.context.sampleRate : null;
  }

  async start() {
    if (this.running) return;
    if (!window.isSecureContext) {
      throw new AudioError(
        "insecure_context",
        "The microphone needs a secure page (https://, or http://localhost / 127.0.0.1).",
      );
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new AudioError("no_media", "This browser cannot capture audio (no getUserMedia).");
    }
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx || !("audioWorklet" in Ctx.prototype)) {
      throw new AudioError("no_worklet", "This browser has no AudioWorklet support.");
    }

    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          channelCount: 1,
          echoCancellation: false,
          noiseSuppression: false,
          autoGainControl: false,
        },
        video: false,
      });
    } catch (err) {
      const name = err && err.name;
      if (name === "NotAllowedError" || name === "SecurityError") {
        throw new AudioError("mic_denied", "Microphone access was denied.");
      }
      if (name === "NotFoundError" || name === "OverconstrainedError") {
        throw new AudioError("no_mic", "No microphone was found.");
      }
      if (name === "NotReadableError") {
        throw new AudioError("mic_busy", "The microphone is in use by another application.");
      }
      throw new AudioError("mic_failed", `Could not open the microphone: ${err && err.message}`);
    }

    try {
      await this.buildGraph(Ctx);
    } catch (err) {
      this.stop();
      if (err instanceof AudioError) throw err;
      throw new AudioError("audio_failed", `Could not start audio processing: ${err && err.message}`);
    }
  }

  async buildGraph(Ctx) {
    // Prefer a 16 kHz context (the browser then resamples the microphone for us and
    // the worklet passes samples through). Some browsers refuse to connect a
    // microphone to a context at another rate; then use the native rate and let
    // the worklet resample.
    let ctx = null;
    let source = null;
    try {
      if (this.nativeRate) throw new Error("native rate requested");
      ctx = new Ctx({ sampleRate: TARGET_RATE, latencyHint: "interactive" });
      source = ctx.createMediaStreamSource(this.stream);
    } catch (_) {
      if (ctx) ctx.close().catch(() => {});
      ctx = new Ctx({ latencyHint: "interactive" });
      source = ctx.createMediaStreamSource(this.stream);
    }
    this.context = ctx;
    this.source = source;
    this.lastCaptureRate = ctx.sampleRate;

    const workletUrl = new URL("./pcm-worklet.js", import.meta.url);
    await ctx.audioWorklet.addModule(workletUrl);
    const node = new AudioWorkletNode(ctx, "pcm-worklet", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      channelCountMode: "max", // the worklet sees every channel and downmixes itself
      processorOptions: { targetRate: TARGET_RATE, frameMs: FRAME_MS },
    });
    node.port.onmessage = (e) => this.handleMessage(e.data);
    source.connect(node);
    // The worklet outputs silence; connecting it keeps the graph pulled in every browser.
    node.connect(ctx.destination);
    this.node = node;
    if (ctx.state !== "running") await ctx.resume();
  }

  handleMessage(msg) {
    if (!msg) return;
    if (msg.type === "frame") {
      this.level = msg.level;
      for (const cb of this.levelListeners) cb(msg.level);
      for (const cb of this.frameListeners) cb(msg.buffer);
    } else if (msg.type === "flushed" && this.flushResolve) {
      this.flushResolve();
      this.flushResolve = null;
    }
  }

  /** Stop capturing; the last partial frame is delivered before this resolves. */
  async stop() {
    const node = this.node;
    if (node) {
      await new Promise((resolve) => {
        this.flushResolve = resolve;
        node.port.postMessage({ type: "flush" });
        setTimeout(resolve, 300); // never hang on a dead context
      });
      this.flushResolve = null;
      node.port.onmessage = null;
      try {
        node.disconnect();
      } catch (_) {}
    }
    if (this.source) {
      try {
        this.source.disconnect();
      } catch (_) {}
    }
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    if (this.context) this.context.close().catch(() => {});
    this.node = null;
    this.source = null;
    this.stream = null;
    this.context = null;
    this.level = 0;
    for (const cb of this.levelListeners) cb(0);
  }
}
