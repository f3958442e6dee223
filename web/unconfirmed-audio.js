// The session's outgoing audio byte stream (docs/protocol.md, "Resume: re-sending audio"):
// every captured byte gets a stream offset; a cursor says what has been handed to the
// transport. Kept: what follows the end of the last transcript.final (to re-send after a
// resume from `resume_from_bytes`, or to a new session when resuming fails) and whatever is
// held back (not sent yet). Both are bounded, and held-back audio is never dropped: at its
// bound the capture pauses (the caller tells the user) so later stream times stay right.

export class UnconfirmedAudio {
  /** @param {{bytesPerSecond: number, keepSeconds: number, holdSeconds: number}} o */
  constructor({ bytesPerSecond, keepSeconds = 60, holdSeconds = 30 }) {
    this.bytesPerSecond = bytesPerSecond;
    this.maxKeep = Math.round(keepSeconds * bytesPerSecond); // sent, unconfirmed audio
    this.maxHeld = Math.round(holdSeconds * bytesPerSecond); // not sent yet
    this.reset();
  }

  reset() {
    this.chunks = []; // {start, buf: Uint8Array}, consecutive offsets
    this.head = 0; // offset of chunks[0]
    this.end = 0; // offset after the last captured byte
    this.cursor = 0; // next offset to hand to the transport
    this.confirmed = 0; // offset up to which a final covers the audio
    this.first = 0; // index of the chunk holding the cursor
  }

  /** Bytes captured but not sent yet. */
  get heldBytes() {
    return this.end - this.cursor;
  }

  /** The oldest offset this client can still re-send (session.resume's audio_from_bytes). */
  get oldest() {
    return this.head;
  }

  /** Append a captured frame; false (and nothing kept) when the held-back bound is reached. */
  capture(buffer) {
    const buf = new Uint8Array(buffer);
    if (this.heldBytes + buf.byteLength > this.maxHeld) return false;
    this.chunks.push({ start: this.end, buf });
    this.end += buf.byteLength;
    return true;
  }

  /** The next piece to send (a whole captured frame unless a rewind split it), or null. */
  next() {
    while (this.first < this.chunks.length) {
      const c = this.chunks[this.first];
      const stop = c.start + c.buf.byteLength;
      if (this.cursor >= stop) {
        this.first++;
        continue;
      }
      const piece = this.cursor === c.start ? c.buf : c.buf.subarray(this.cursor - c.start);
      this.cursor = stop;
      this.first++;
      this.trim();
      return piece.byteOffset === 0 && piece.byteLength === piece.buffer.byteLength ? piece.buffer : piece.slice().buffer;
    }
    return null;
  }

  /** A final ends at `endSeconds` of stream time: audio before it need not be re-sent. */
  confirm(endSeconds, bytesPerSample = 2) {
    if (typeof endSeconds !== "number" || !isFinite(endSeconds) || endSeconds < 0) return;
    const samples = Math.floor(endSeconds * (this.bytesPerSecond / bytesPerSample));
    this.confirmed = Math.max(this.confirmed, Math.min(samples * bytesPerSample, this.cursor));
    this.trim();
  }

  /** session.resumed said: send again from `offset`. */
  rewind(offset) {
    const to = Math.max(this.head, Math.min(Math.floor(offset), this.end));
    this.cursor = to;
    this.first = 0;
    while (this.first < this.chunks.length) {
      const c = this.chunks[this.first];
      if (c.start + c.buf.byteLength > to) break;
      this.first++;
    }
  }

  /** A new session: its stream starts (at 0) with the first unconfirmed byte. */
  rebase() {
    const from = Math.max(this.head, Math.min(this.confirmed, this.end));
    this.rewind(from);
    this.dropBefore(from);
    const c = this.chunks[0];
    if (c && c.start < from) {
      c.buf = c.buf.subarray(from - c.start);
      c.start = from;
      this.head = from;
    }
    for (const c of this.chunks) c.start -= from;
    this.head -= from;
    this.end -= from;
    this.cursor -= from;
    this.confirmed = 0;
  }

  /** Forget sent audio a final covers, and sent audio beyond the keep bound. */
  trim() {
    let limit = Math.min(this.confirmed, this.cursor);
    const over = this.cursor - this.head - this.maxKeep;
    if (over > 0) limit = Math.max(limit, this.head + over);
    this.dropBefore(Math.min(limit, this.cursor));
  }

  dropBefore(offset) {
    let n = 0;
    while (n < this.chunks.length && this.chunks[n].start + this.chunks[n].buf.byteLength <= offset) n++;
    if (n > 0) {
      this.chunks.splice(0, n);
      this.first = Math.max(0, this.first - n);
    }
    this.head = this.chunks.length ? this.chunks[0].start : this.end;
  }
}
