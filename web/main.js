// Wires the page: settings (saved in localStorage), provider list from GET /v1/models,
// the live session (RealtimeUiManager) and batch transcription of a file.

import { AudioStreamManager, TARGET_RATE } from "./audio-stream-manager.js";
import { authHeaders, hubBase, readErrorBody } from "./protocol-adapters.js";
import {
  ConnectionStateView,
  ErrorView,
  RealtimeUiManager,
  TranscriptView,
} from "./realtime-ui-manager.js";
import { VadDisplay } from "./vad-display.js";
import { WakewordManager } from "./wakeword-manager.js";

const KEY_STORAGE = "asrhub.apiKey";
const SETTINGS_STORAGE = "asrhub.settings";

const $ = (id) => document.getElementById(id);

const els = {
  transport: $("transport"),
  apiKey: $("api-key"),
  apiKeyToggle: $("api-key-toggle"),
  hubUrl: $("hub-url"),
  connectionFields: $("connection-fields"),
  provider: $("provider"),
  providerText: $("provider-text"),
  providerHint: $("provider-hint"),
  language: $("language"),
  partials: $("partials"),
  vadEnabled: $("vad-enabled"),
  vadDetails: $("vad-details"),
  vadAggressiveness: $("vad-aggressiveness"),
  vadSilence: $("vad-silence"),
  start: $("start"),
  stop: $("stop"),
  clear: $("clear"),
  placeholder: $("transcript-placeholder"),
  fileForm: $("file-form"),
  file: $("file"),
  fileButton: $("transcribe-file"),
  fileResult: $("file-result"),
  log: $("event-log"),
};

// ---------------------------------------------------------------- settings

function storage() {
  try {
    return window.localStorage;
  } catch (_) {
    return null; // storage disabled
  }
}

function loadSettings() {
  const store = storage();
  const params = new URLSearchParams(window.location.search);
  let saved = {};
  try {
    saved = JSON.parse((store && store.getItem(SETTINGS_STORAGE)) || "{}") || {};
  } catch (_) {}
  els.apiKey.value = (store && store.getItem(KEY_STORAGE)) || "";
  const transport = params.get("transport") || saved.transport;
  if (transport && [...els.transport.options].some((o) => o.value === transport)) {
    els.transport.value = transport;
  }
  els.hubUrl.value = params.get("hub") || saved.hubUrl || "";
  els.language.value = saved.language || "";
  if (typeof saved.partials === "boolean") els.partials.checked = saved.partials;
  if (saved.vad) {
    els.vadEnabled.checked = saved.vad.enabled !== false;
    if (saved.vad.aggressiveness !== undefined) els.vadAggressiveness.value = String(saved.vad.aggressiveness);
    if (saved.vad.silence_ms) els.vadSilence.value = String(saved.vad.silence_ms);
  }
  wakeword.setConfig(saved.wakeword);
  savedProvider = saved.provider || "";
  syncVad();
}

function saveSettings() {
  const store = storage();
  if (!store) return;
  const cfg = buildConfig();
  try {
    store.setItem(KEY_STORAGE, els.apiKey.value.trim());
    store.setItem(
      SETTINGS_STORAGE,
      JSON.stringify({
        transport: els.transport.value,
        hubUrl: els.hubUrl.value.trim(),
        provider: currentProvider(),
        language: els.language.value.trim(),
        partials: els.partials.checked,
        vad: cfg.vad,
        wakeword: cfg.wakeword,
      }),
    );
  } catch (_) {}
}

function syncVad() {
  els.vadDetails.disabled = !els.vadEnabled.checked;
}

function currentProvider() {
  return (els.provider.hidden ? els.providerText.value : els.provider.value).trim();
}

/** The session.start config (docs/protocol.md). */
function buildConfig() {
  const silence = Math.round(Number(els.vadSilence.value));
  const config = {
    audio: { encoding: "pcm_s16le", sample_rate: TARGET_RATE, channels: 1 },
    vad: {
      enabled: els.vadEnabled.checked,
      aggressiveness: Number(els.vadAggressiveness.value),
      silence_ms: Number.isFinite(silence) && silence > 0 ? silence : 600,
    },
    wakeword: wakeword.getConfig(),
    partials: els.partials.checked,
  };
  const provider = currentProvider();
  if (provider) config.provider = provider;
  const language = els.language.value.trim();
  if (language && language !== "auto") config.language = language;
  return config;
}

function apiKey() {
  return els.apiKey.value.trim();
}

function base() {
  try {
    return hubBase(els.hubUrl.value);
  } catch (_) {
    return window.location.origin;
  }
}

// ---------------------------------------------------------------- provider list

let savedProvider = "";
let modelsRequest = 0;

function useProviderText(reason) {
  els.provider.hidden = true;
  els.providerText.hidden = false;
  if (!els.providerText.value) els.providerText.value = savedProvider;
  els.providerHint.textContent = reason;
}

async function loadModels() {
  const request = ++modelsRequest;
  const wanted = currentProvider() || savedProvider;
  try {
    const resp = await fetch(`${base()}/v1/models`, { headers: authHeaders(apiKey()), cache: "no-store" });
    if (request !== modelsRequest) return;
    if (!resp.ok) {
      const err = await readErrorBody(resp);
      useProviderText(
        err.code === "unauthorized"
          ? "The provider list needs a valid API key; type a provider name or leave it empty for the default."
          : "Could not load the provider list; type a provider name or leave it empty for the default.",
      );
      return;
    }
    const body = await resp.json();
    const ids = (Array.isArray(body.data) ? body.data : []).map((m) => m && m.id).filter(Boolean);
    if (!ids.length) {
      useProviderText("The hub listed no providers; type one or leave it empty for the default.");
      return;
    }
    const options = [new Option("Hub default", "")];
    for (const id of ids) options.push(new Option(id, id));
    els.provider.replaceChildren(...options);
    if (wanted && ids.includes(wanted)) els.provider.value = wanted;
    els.provider.hidden = false;
    els.providerText.hidden = true;
    els.providerHint.textContent = `${ids.length} provider${ids.length === 1 ? "" : "s"} available.`;
  } catch (_) {
    if (request !== modelsRequest) return;
    useProviderText("Could not reach the hub to list providers; type a provider name or leave it empty.");
  }
}

// ---------------------------------------------------------------- live session

const audio = new AudioStreamManager({
  nativeRate: new URLSearchParams(window.location.search).get("capture") === "native",
});
const errors = new ErrorView($("error"));
const vad = new VadDisplay($("vad-state"), $("level"));
const wakeword = new WakewordManager({
  enabled: $("wakeword-enabled"),
  names: $("wakeword-names"),
  custom: $("wakeword-custom"),
  threshold: $("wakeword-threshold"),
  thresholdOut: $("wakeword-threshold-out"),
  state: $("wakeword-state"),
  details: $("wakeword-details"),
});
const transcript = new TranscriptView($("transcript-final"), $("transcript-partial"));
const connection = new ConnectionStateView($("connection-state"));
audio.onLevel((level) => vad.level(level));

const LOG_LIMIT = 200;
function logEvent(msg) {
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  li.textContent = `${time} ${JSON.stringify(msg)}`;
  els.log.append(li);
  while (els.log.childElementCount > LOG_LIMIT) els.log.firstElementChild.remove();
}

function updatePlaceholder() {
  const empty = transcript.empty && !$("transcript-partial").textContent;
  els.placeholder.hidden = !empty;
}
new MutationObserver(updatePlaceholder).observe($("transcript-final").parentElement, {
  childList: true,
  subtree: true,
  characterData: true,
});

const ui = new RealtimeUiManager({
  audio,
  transcript,
  connection,
  errors,
  vad,
  wakeword,
  onHubEvent: logEvent,
  backlogEl: $("backlog"),
  onRunningChange(running) {
    const focusWasOn = document.activeElement;
    els.start.disabled = running;
    els.stop.disabled = !running;
    els.connectionFields.disabled = running;
    document.body.dataset.running = running ? "true" : "false";
    // Keep keyboard focus on the button that makes sense next.
    if (running && focusWasOn === els.start) els.stop.focus();
    if (!running && (focusWasOn === els.stop || focusWasOn === document.body)) els.start.focus();
  },
});

els.start.addEventListener("click", () => {
  saveSettings();
  ui.start({
    transport: els.transport.value,
    hubUrl: els.hubUrl.value.trim(),
    apiKey: apiKey(),
    config: buildConfig(),
  });
});
els.stop.addEventListener("click", () => ui.stop());
els.clear.addEventListener("click", () => {
  transcript.clear();
  els.fileResult.replaceChildren();
  if (!ui.running) errors.clear();
});

// ---------------------------------------------------------------- batch file

function renderFileResult(body, name) {
  const heading = document.createElement("h3");
  heading.textContent = `Result for ${name}`;
  const text = document.createElement("p");
  text.className = "file-text";
  text.dataset.testid = "file-text";
  text.textContent = body.text || "(no speech recognised)";
  const nodes = [heading, text];
  const segments = Array.isArray(body.segments) ? body.segments : [];
  if (segments.length) {
    const list = document.createElement("ol");
    list.className = "segments";
    for (const seg of segments) {
      const li = document.createElement("li");
      const time = document.createElement("span");
      time.className = "time";
      const s = typeof seg.start === "number" ? seg.start.toFixed(2) : "?";
      const e = typeof seg.end === "number" ? seg.end.toFixed(2) : "?";
      time.textContent = `${s}–${e} s`;
      li.append(time, ` ${seg.text || ""}`);
      list.append(li);
    }
    nodes.push(list);
  }
  els.fileResult.replaceChildren(...nodes);
}

els.fileForm.addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = els.file.files && els.file.files[0];
  if (!file) {
    errors.show("no_file");
    els.file.focus();
    return;
  }
  saveSettings();
  errors.clear();
  const form = new FormData();
  form.append("file", file, file.name);
  const provider = currentProvider();
  if (provider) form.append("provider", provider);
  const language = els.language.value.trim();
  if (language && language !== "auto") form.append("language", language);
  els.fileButton.disabled = true;
  els.fileButton.textContent = "Transcribing…";
  els.fileResult.setAttribute("aria-busy", "true");
  els.fileResult.textContent = `Transcribing ${file.name}…`;
  try {
    const resp = await fetch(`${base()}/v1/transcribe`, {
      method: "POST",
      headers: authHeaders(apiKey()),
      body: form,
    });
    if (!resp.ok) {
      const err = await readErrorBody(resp);
      els.fileResult.replaceChildren();
      errors.show(err.code, err.message);
      return;
    }
    renderFileResult(await resp.json(), file.name);
  } catch (_) {
    els.fileResult.replaceChildren();
    errors.show("network", `Cannot reach the hub at ${base()}.`);
  } finally {
    els.fileButton.disabled = false;
    els.fileButton.textContent = "Transcribe file";
    els.fileResult.removeAttribute("aria-busy");
  }
});

// ---------------------------------------------------------------- settings events

$("settings").addEventListener("submit", (e) => e.preventDefault());
els.vadEnabled.addEventListener("change", syncVad);
els.apiKeyToggle.addEventListener("click", () => {
  const show = els.apiKey.type === "password";
  els.apiKey.type = show ? "text" : "password";
  els.apiKeyToggle.textContent = show ? "Hide" : "Show";
  els.apiKeyToggle.setAttribute("aria-pressed", String(show));
});
els.apiKey.addEventListener("change", () => {
  saveSettings();
  loadModels();
});
els.hubUrl.addEventListener("change", () => {
  saveSettings();
  loadModels();
});
$("settings").addEventListener("change", saveSettings);

loadSettings();
updatePlaceholder();
loadModels();

// For tests and debugging in the console.
window.asrhub = {
  ui,
  audio,
  transcript,
  buildConfig,
  get lastCaptureRate() {
    return audio.lastCaptureRate || null;
  },
};
