// Stenograph's live-captions page: the microphone over WS /v1/stream, and files
// over POST /v1/audio/transcriptions. No dependencies; works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const server = { ready: false, sampleRate: 16000, auth: false, mode: "" };

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  return server.auth && apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {};
}

function showError(id, message) {
  const box = $(id);
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

// ---------------------------------------------------------------------------
// Server health

async function waitForServer() {
  for (let attempt = 0; attempt < 600; attempt++) {
    try {
      const response = await fetch("/healthz", { cache: "no-store" });
      const body = await response.json();
      server.auth = Boolean(body.auth);
      $("auth").hidden = !server.auth;
      if (response.ok) {
        Object.assign(server, { ready: true, sampleRate: body.sample_rate, mode: body.mode });
        const live = body.mode === "redecode" ? "re-decoding the open segment" : "streaming";
        setStatus(`Ready: model ${body.model}, ${body.decoder}, live mode ${live}.`, "ready");
        $("mic").disabled = false;
        return;
      }
      if (body.status === "error") {
        setStatus(`The server could not load its model: ${body.error}`, "error");
        return;
      }
      setStatus("The model is loading…", "loading");
    } catch (error) {
      setStatus("Cannot reach the server; retrying…", "error");
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

// ---------------------------------------------------------------------------
// Live captions

const live = { socket: null, context: null, stream: null, node: null, finals: [], queue: [], ready: false };

function renderLive(partial) {
  $("live-final").textContent = live.finals.join(" ");
  $("live-partial").textContent = partial || "";
}

function setMicButton(listening) {
  $("mic").textContent = listening ? "Stop" : "Start listening";
  $("mic").setAttribute("aria-pressed", String(listening));
}

async function startListening() {
  showError("live-error", "");
  // The audio graph is ready before the microphone opens, so no speech is lost while
  // it starts; frames captured before the server is ready wait in live.queue.
  let context;
  try {
    context = new AudioContext();
    await context.audioWorklet.addModule("/static/capture-worklet.js");
  } catch (error) {
    showError("live-error", `This browser cannot capture audio here (${error}).`);
    return;
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (error) {
    context.close();
    const denied = error && (error.name === "NotAllowedError" || error.name === "SecurityError");
    showError(
      "live-error",
      denied
        ? "Microphone permission was refused. Allow the microphone for this page and try again."
        : `No microphone could be opened (${error.name || error}).`
    );
    return;
  }
  Object.assign(live, { stream: media, context, finals: [], queue: [], ready: false });
  connectAudio();
  renderLive("");
  $("live").dataset.state = "listening";
  const protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${protocol}//${location.host}/v1/stream`);
  live.socket = socket;
  socket.onopen = () => {
    const config = { sample_rate: server.sampleRate, encoding: "pcm_s16le" };
    if (server.auth) config.api_key = apiKey();
    socket.send(JSON.stringify(config));
  };
  socket.onmessage = (event) => onStreamMessage(JSON.parse(event.data));
  socket.onerror = () => showError("live-error", "The connection to the server failed.");
  socket.onclose = (event) => {
    if (event.code === 1013) showError("live-error", `Server busy: ${event.reason || "try again shortly"}.`);
    else if (event.code !== 1000 && !$("live-error").textContent)
      showError("live-error", `The server closed the stream (${event.code} ${event.reason}).`);
    stopAudio();
    setMicButton(false);
    $("live").dataset.state = "done";
  };
  setMicButton(true);
}

function connectAudio() {
  const { context } = live;
  const source = context.createMediaStreamSource(live.stream);
  const node = new AudioWorkletNode(context, "capture", {
    processorOptions: { targetRate: server.sampleRate },
  });
  node.port.onmessage = (event) => {
    if (live.ready && live.socket.readyState === WebSocket.OPEN) live.socket.send(event.data);
    else if (!live.ready) live.queue.push(event.data);
  };
  const mute = context.createGain();
  mute.gain.value = 0; // keeps the graph pulled without playing the microphone back
  source.connect(node).connect(mute).connect(context.destination);
  live.node = node;
}

function onStreamMessage(message) {
  if (message.type === "ready") {
    live.ready = true;
    for (const frame of live.queue) live.socket.send(frame);
    live.queue = [];
  } else if (message.type === "partial") {
    renderLive(message.text);
  } else if (message.type === "final") {
    if (message.text) live.finals.push(message.text);
    renderLive("");
  } else if (message.type === "done") {
    live.finals = message.text ? [message.text] : [];
    renderLive("");
    $("live").dataset.state = "done";
  } else if (message.type === "error") {
    showError("live-error", message.error);
  }
}

function stopAudio() {
  if (live.node) live.node.port.postMessage("flush");
  if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
  if (live.context) live.context.close();
  Object.assign(live, { stream: null, context: null, node: null });
}

function stopListening() {
  const socket = live.socket;
  if (live.node) live.node.port.postMessage("flush");
  // Give the worklet's last frame a moment to arrive before the stop message.
  setTimeout(() => {
    if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "stop" }));
    $("live").dataset.state = "finishing";
  }, 150);
  setMicButton(false);
}

$("mic").addEventListener("click", () => {
  if ($("mic").getAttribute("aria-pressed") === "true") stopListening();
  else startListening();
});

// ---------------------------------------------------------------------------
// Files

const upload = { file: null };

async function transcribe(file, format) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("response_format", format);
  if (format === "verbose_json") form.append("timestamp_granularities[]", "word");
  const response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers: authHeaders() });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message;
    } catch (error) {
      /* not JSON: keep the status line */
    }
    if (response.status === 503) message = `Server busy: ${message}`;
    throw new Error(message);
  }
  return format === "verbose_json" ? response.json() : response.text();
}

function renderWords(words) {
  const body = $("words").querySelector("tbody");
  body.replaceChildren(
    ...words.map((word) => {
      const row = document.createElement("tr");
      for (const value of [word.word, word.start.toFixed(2), word.end.toFixed(2)]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      return row;
    })
  );
}

async function onFile(file) {
  if (!file) return;
  upload.file = file;
  showError("file-error", "");
  $("file-result").hidden = true;
  $("file-state").textContent = `Transcribing ${file.name}…`;
  try {
    const result = await transcribe(file, "verbose_json");
    $("file-text").textContent = result.text;
    renderWords(result.words || []);
    $("file-result").hidden = false;
    $("file-state").textContent = `${file.name}: ${result.duration.toFixed(1)} s of audio.`;
  } catch (error) {
    $("file-state").textContent = "";
    showError("file-error", `Could not transcribe ${file.name}: ${error.message}`);
  }
}

async function download(format) {
  if (!upload.file) return;
  try {
    const text = await transcribe(upload.file, format);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    link.download = upload.file.name.replace(/\.[^.]*$/, "") + `.${format}`;
    link.click();
    URL.revokeObjectURL(link.href);
  } catch (error) {
    showError("file-error", `Could not make the ${format.toUpperCase()} file: ${error.message}`);
  }
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // so choosing the same file again (e.g. after an error) retries
  onFile(file);
});
$("download-srt").addEventListener("click", () => download("srt"));
$("download-vtt").addEventListener("click", () => download("vtt"));
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.dataset.over = "true";
});
drop.addEventListener("dragleave", () => (drop.dataset.over = "false"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.dataset.over = "false";
  onFile(event.dataTransfer.files[0]);
});

waitForServer();
