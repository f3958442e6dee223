// AudioWorklet processor: downmix to mono, resample to the target rate (16 kHz by
// default) with a windowed-sinc low-pass (anti-aliasing), and post Int16 PCM
// frames of `frameMs` milliseconds as transferable ArrayBuffers.
//
// Messages posted to the main thread:
//   {type: "frame", buffer: ArrayBuffer, level: number}   level = RMS in 0..1
// Messages accepted from the main thread:
//   {type: "flush"}  post whatever is buffered as a last (short) frame, then {type: "flushed"}

const HALF_ZERO_CROSSINGS = 8; // kernel half-width, in zero crossings of the low-pass
const PHASES = 256; // fractional-delay resolution of the polyphase table

class StreamingResampler {
  constructor(inRate, outRate) {
    this.ratio = inRate / outRate; // input samples per output sample
    this.passthrough = inRate === outRate;
    // Cut-off just below the lower of the two Nyquist frequencies, in cycles per input sample.
    this.fc = 0.5 * Math.min(1, outRate / inRate) * 0.92;
    this.half = Math.ceil(HALF_ZERO_CROSSINGS / (2 * this.fc)); // taps each side
    this.buf = new Float32Array(4096);
    // Position (in input samples, relative to buf[0]) of the next output sample.
    // Starting at `half` gives the filter its full left context (zeros before the stream).
    this.pos = this.half;
    this.len = this.half; // leading zeros
    // Polyphase table: PHASES fractional offsets x (2*half) taps, each row normalised to
    // unit DC gain, so the inner loop is a plain dot product.
    this.taps = 2 * this.half;
    this.table = new Float32Array((PHASES + 1) * this.taps);
    for (let p = 0; p <= PHASES; p++) {
      const frac = p / PHASES;
      let sum = 0;
      for (let j = 0; j < this.taps; j++) {
        const t = j - this.half + 1 - frac; // tap j reads buf[centre - half + 1 + j]
        const w = t <= -this.half || t >= this.half ? 0 : this.kernel(t);
        this.table[p * this.taps + j] = w;
        sum += w;
      }
      for (let j = 0; j < this.taps; j++) this.table[p * this.taps + j] /= sum || 1;
    }
  }

  kernel(t) {
    // Low-pass sinc times a Blackman window over |t| < half.
    const x = 2 * this.fc * t;
    const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
    const w = t / this.half; // -1..1
    const win = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
    return sinc * win;
  }

  /** Append mono input samples, return the new output samples: a view of a buffer this
   *  resampler reuses (valid until the next call), so a 128-sample block allocates nothing. */
  process(input) {
    if (this.passthrough) return input;
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;

    const most = Math.ceil((this.len - this.pos) / this.ratio) + 1;
    if (!this.out || this.out.length < most) this.out = new Float32Array(Math.max(most, 256));
    const out = this.out;
    let count = 0;
    const h = this.half;
    while (Math.floor(this.pos) + h < this.len) {
      const centre = Math.floor(this.pos);
      const phase = Math.round((this.pos - centre) * PHASES);
      const row = phase * this.taps;
      const first = centre - h + 1;
      let acc = 0;
      for (let j = 0; j < this.taps; j++) acc += this.buf[first + j] * this.table[row + j];
      out[count++] = acc;
      this.pos += this.ratio;
    }
    // Drop input no longer needed (keep `h` samples of left context).
    const keepFrom = Math.max(0, Math.floor(this.pos) - h);
    if (keepFrom > 0) {
      this.buf.copyWithin(0, keepFrom, this.len);
      this.len -= keepFrom;
      this.pos -= keepFrom;
    }
    return out.subarray(0, count);
  }
}

class PcmWorkletProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    const frameMs = opts.frameMs || 100;
    this.frameSamples = Math.round((this.targetRate * frameMs) / 1000);
    // `sampleRate` is the AudioContext rate (a global of the worklet scope).
    this.resampler = new StreamingResampler(sampleRate, this.targetRate);
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
    this.sumSquares = 0;
    this.port.onmessage = (e) => {
      if (e.data && e.data.type === "flush") {
        this.emit(true);
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  emit(partial) {
    if (this.fill === 0) return;
    const n = partial ? this.fill : this.frameSamples;
    const out = this.frame.slice(0, n);
    const level = Math.sqrt(this.sumSquares / n);
    this.port.postMessage({ type: "frame", buffer: out.buffer, level }, [out.buffer]);
    this.fill = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || input[0].length === 0) return true;
    // Downmix: average the channels.
    const n = input[0].length;
    let mono;
    if (input.length === 1) {
      mono = input[0]; // read only: no copy needed
    } else {
      if (!this.mono || this.mono.length !== n) this.mono = new Float32Array(n); // once per block size
      mono = this.mono;
      mono.set(input[0]);
      for (let c = 1; c < input.length; c++) {
        const ch = input[c];
        for (let i = 0; i < n; i++) mono[i] += ch[i];
      }
    }
    if (input.length > 1) {
      const g = 1 / input.length;
      for (let i = 0; i < n; i++) mono[i] *= g;
    }
    const samples = this.resampler.process(mono);
    for (let i = 0; i < samples.length; i++) {
      let s = samples[i];
      if (s > 1) s = 1;
      else if (s < -1) s = -1;
      this.sumSquares += s * s;
      this.frame[this.fill++] = s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff);
      if (this.fill === this.frameSamples) this.emit(false);
    }
    return true;
  }
}

registerProcessor("pcm-worklet", PcmWorkletProcessor);
