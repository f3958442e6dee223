// Speech / silence indicator driven by the hub's vad.speech_started / vad.speech_ended
// events, plus the microphone level meter.

function fmt(t) {
  return typeof t === "number" && isFinite(t) ? `${t.toFixed(1)} s` : "";
}

export class VadDisplay {
  /**
   * @param {HTMLElement} stateEl  element with data-testid="vad-state"
   * @param {HTMLMeterElement} [meterEl]  input level meter
   */
  constructor(stateEl, meterEl) {
    this.el = stateEl;
    this.meter = meterEl || null;
    this.enabled = true;
    this.setIdle();
  }

  set(state, text) {
    this.state = state;
    this.el.dataset.state = state;
    this.el.textContent = text;
  }

  setIdle() {
    this.set("idle", "Idle");
    this.level(0);
  }

  /** Called with the session's VAD config (requested, then the effective one). */
  setSession(vad) {
    this.enabled = !vad || vad.enabled !== false;
    if (this.enabled) this.set("silence", "Silence");
    else this.set("off", "VAD off");
  }

  handle(msg) {
    if (msg.type === "vad.speech_started") {
      this.set("speech", `Speech${msg.t !== undefined ? ` since ${fmt(msg.t)}` : ""}`);
    } else if (msg.type === "vad.speech_ended") {
      this.set("silence", `Silence${msg.t !== undefined ? ` since ${fmt(msg.t)}` : ""}`);
    }
  }

  /** RMS level 0..1 -> meter position on a -60..0 dBFS scale. */
  level(rms) {
    if (!this.meter) return;
    const db = rms > 0 ? 20 * Math.log10(rms) : -60;
    const v = Math.max(0, Math.min(1, (db + 60) / 60));
    this.meter.value = v;
    this.meter.textContent = `${Math.round(v * 100)}%`;
  }
}
