// AudioWorklet processor: microphone audio (the context's rate, first channel) to
// 16-bit PCM at the model's rate, posted to the page in ~100 ms frames.
//
// Resampling is a windowed-sinc (Blackman) interpolator evaluated at each output
// instant, with its cutoff at 0.45 of the lower rate, so downsampling does not alias.

const HALF_TAPS = 16;

function blackmanSinc(x, cutoff) {
  // x: distance in input samples; cutoff: fraction of the input rate.
  if (Math.abs(x) >= HALF_TAPS) return 0;
  const arg = 2 * cutoff * x;
  const sinc = x === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
  const phase = (x + HALF_TAPS) / (2 * HALF_TAPS);
  const window = 0.42 - 0.5 * Math.cos(2 * Math.PI * phase) + 0.08 * Math.cos(4 * Math.PI * phase);
  return 2 * cutoff * sinc * window;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.targetRate = options.processorOptions.targetRate;
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.cutoff = 0.45 * Math.min(1, this.targetRate / sampleRate);
    this.history = new Float32Array(0); // input not yet fully used
    this.historyStart = 0; // absolute index of history[0]
    this.nextOut = 0; // absolute input position of the next output sample
    this.frame = new Int16Array(Math.round(this.targetRate / 10));
    this.filled = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.flush();
    };
  }

  append(input) {
    const joined = new Float32Array(this.history.length + input.length);
    joined.set(this.history);
    joined.set(input, this.history.length);
    this.history = joined;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.frame[this.filled++] = Math.round(clipped * 32767);
    if (this.filled === this.frame.length) this.flush();
  }

  flush() {
    if (this.filled === 0) return;
    const out = this.frame.slice(0, this.filled);
    this.port.postMessage(out.buffer, [out.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    this.append(channel);
    const end = this.historyStart + this.history.length;
    while (this.nextOut + HALF_TAPS < end) {
      const centre = this.nextOut - this.historyStart;
      const first = Math.max(0, Math.ceil(centre - HALF_TAPS));
      const last = Math.min(this.history.length - 1, Math.floor(centre + HALF_TAPS));
      let sum = 0;
      for (let i = first; i <= last; i++) sum += this.history[i] * blackmanSinc(i - centre, this.cutoff);
      this.emit(sum);
      this.nextOut += this.step;
    }
    const keepFrom = Math.max(0, Math.floor(this.nextOut - HALF_TAPS) - this.historyStart);
    this.history = this.history.slice(keepFrom);
    this.historyStart += keepFrom;
    return true;
  }
}

registerProcessor("capture", CaptureProcessor);
