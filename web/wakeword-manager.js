// Wake-word settings (on/off, names, threshold) and the detected state shown from
// the hub's wakeword.detected events.

export const KNOWN_WAKEWORDS = [
  ["hey_jarvis", "Hey Jarvis"],
  ["alexa", "Alexa"],
  ["hey_mycroft", "Hey Mycroft"],
  ["hey_rhasspy", "Hey Rhasspy"],
];

export class WakewordManager {
  /**
   * @param {object} els
   * @param {HTMLInputElement} els.enabled   checkbox
   * @param {HTMLElement} els.names          container for the name checkboxes
   * @param {HTMLInputElement} els.custom    extra names, comma separated
   * @param {HTMLInputElement} els.threshold range 0..1
   * @param {HTMLOutputElement} els.thresholdOut
   * @param {HTMLElement} els.state          element with data-testid="wakeword-state"
   * @param {HTMLFieldSetElement} els.details fieldset disabled while wake word is off
   */
  constructor(els) {
    this.els = els;
    this.boxes = [];
    for (const [id, label] of KNOWN_WAKEWORDS) {
      const wrap = document.createElement("label");
      wrap.className = "check";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = id;
      box.name = "wakeword-name";
      box.dataset.testid = `wakeword-${id}`;
      wrap.append(box, ` ${label}`);
      els.names.append(wrap);
      this.boxes.push(box);
    }
    const sync = () => {
      els.thresholdOut.value = Number(els.threshold.value).toFixed(2);
      els.details.disabled = !els.enabled.checked;
    };
    els.threshold.addEventListener("input", sync);
    els.enabled.addEventListener("change", sync);
    this.sync = sync;
    sync();
    this.setIdle();
  }

  getConfig() {
    const names = this.boxes.filter((b) => b.checked).map((b) => b.value);
    for (const n of this.els.custom.value.split(",")) {
      const name = n.trim();
      if (name && !names.includes(name)) names.push(name);
    }
    return {
      enabled: this.els.enabled.checked,
      names,
      threshold: Number(this.els.threshold.value),
    };
  }

  /** Restore from saved settings. */
  setConfig(cfg) {
    if (!cfg) return;
    this.els.enabled.checked = !!cfg.enabled;
    const names = Array.isArray(cfg.names) ? cfg.names : [];
    for (const b of this.boxes) b.checked = names.includes(b.value);
    this.els.custom.value = names.filter((n) => !this.boxes.some((b) => b.value === n)).join(", ");
    if (typeof cfg.threshold === "number") this.els.threshold.value = String(cfg.threshold);
    this.sync();
  }

  set(state, text) {
    this.state = state;
    this.els.state.dataset.state = state;
    this.els.state.textContent = text;
  }

  setIdle() {
    this.lastDetection = null;
    this.set(this.els.enabled.checked ? "idle" : "off", this.els.enabled.checked ? "Wake word: not listening" : "Wake word off");
  }

  /** Called with the session's wake-word config (requested, then the effective one). */
  setSession(cfg) {
    if (!cfg || !cfg.enabled) {
      this.set("off", "Wake word off");
      return;
    }
    const names = (cfg.names && cfg.names.length ? cfg.names : ["any"]).join(", ");
    this.set("listening", `Listening for ${names}`);
  }

  handle(msg) {
    const score = typeof msg.score === "number" ? msg.score.toFixed(2) : "?";
    const at = typeof msg.t === "number" ? ` at ${msg.t.toFixed(1)} s` : "";
    this.lastDetection = msg;
    this.set("detected", `Detected “${msg.name}” (score ${score})${at}`);
  }
}
