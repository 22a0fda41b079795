// The RoomKit web chat: pick or create a room, read its timeline over REST,
// then follow it live over the WebSocket and send messages through it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { room: null, ws: null, lastIndex: null, seen: new Set(), retry: 0, typingAt: 0, closing: false };

function key() { return $("key").value.trim(); }
function me() { return $("name").value.trim() || "guest"; }
function status(text) { $("status").textContent = text; }

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (key()) headers.authorization = "Bearer " + key();
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.status = res.status;
    err.code = data && data.error && data.error.code;
    throw err;
  }
  return data;
}

async function loadRooms() {
  try {
    const page = await api("GET", "/rooms?limit=500");
    $("rooms").replaceChildren(...page.items.map((r) => { const o = document.createElement("option"); o.value = r.id; return o; }));
  } catch (e) { /* the list is a convenience */ }
}

function textOf(content) {
  if (!content) return "";
  switch (content.type) {
    case "text": return content.text;
    case "system": return content.message;
    case "media": return "[media] " + content.url;
    case "location": return "[location] " + content.latitude + ", " + content.longitude;
    case "composite": return content.parts.map(textOf).join(" ");
    case "rich": return content.body || content.text || "[rich content]";
    case "edit": return "[edit] " + textOf(content.new_content);
    case "delete": return "[deleted a message]";
    default: return "[" + content.type + "]";
  }
}

function render(event) {
  if (state.seen.has(event.index)) return;
  state.seen.add(event.index);
  if (state.lastIndex === null || event.index > state.lastIndex) state.lastIndex = event.index;
  if (event.type === "read_receipt") return;
  const li = document.createElement("li");
  li.dataset.index = event.index;
  const src = event.source || {};
  const who = src.participant_id || src.external_id || src.channel_id;
  if (event.type !== "message") li.className = "system";
  else if (src.channel_type === "ai") li.className = "ai";
  else if (src.participant_id === me()) li.className = "mine";
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = "#" + event.index + " " + (event.type === "message" ? who : event.type.replace(/_/g, " "));
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = textOf(event.content);
  li.append(meta, text);
  if (event.status === "blocked") {
    li.classList.add("blocked");
    const b = document.createElement("span");
    b.className = "badge";
    b.textContent = "blocked by " + (event.blocked_by || "a rule");
    li.append(b);
  }
  const list = $("messages");
  const after = [...list.children].find((c) => Number(c.dataset.index) > event.index);
  list.insertBefore(li, after || null);
  list.scrollTop = list.scrollHeight;
}

async function ensureRoom(id) {
  try { await api("GET", "/rooms/" + encodeURIComponent(id)); }
  catch (e) {
    if (e.status !== 404) throw e;
    await api("POST", "/rooms", { id });
  }
  const bindings = await api("GET", "/rooms/" + encodeURIComponent(id) + "/channels?limit=500");
  const attached = new Set(bindings.items.map((b) => b.channel_id));
  const channels = await api("GET", "/channels?limit=500");
  for (const c of channels.items) {
    if ((c.type === "websocket" || c.type === "ai") && !attached.has(c.id)) {
      try { await api("POST", "/rooms/" + encodeURIComponent(id) + "/channels", { channel_id: c.id }); }
      catch (e) { if (e.status !== 409) throw e; }
    }
  }
  return channels.items.find((c) => c.type === "websocket");
}

async function loadTimeline(id) {
  let cursor = null;
  do {
    const q = "/rooms/" + encodeURIComponent(id) + "/timeline?limit=500" + (cursor ? "&cursor=" + cursor : "");
    const page = await api("GET", q);
    page.items.forEach(render);
    cursor = page.next_cursor;
  } while (cursor);
}

function connect() {
  const params = new URLSearchParams({ channel_id: state.channel, participant_id: me() });
  if (state.lastIndex !== null) params.set("after_index", state.lastIndex);
  if (key()) params.set("token", key());
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/ws/" + encodeURIComponent(state.room) + "?" + params);
  state.ws = ws;
  ws.onopen = () => { state.retry = 0; status("Connected to room " + state.room + " as " + me() + "."); setComposer(true); };
  ws.onmessage = (m) => {
    const frame = JSON.parse(m.data);
    if (frame.type === "event") render(frame.event);
    else if (frame.type === "ephemeral" && frame.event.type === "typing") showTyping(frame.event);
    else if (frame.type === "ack" && frame.result.blocked) status("Your message was " + (frame.result.reason === "duplicate" ? "a duplicate" : "blocked (" + frame.result.reason + ")") + ".");
    else if (frame.type === "error") status("Error: " + frame.error.message);
  };
  ws.onclose = (e) => {
    setComposer(false);
    if (state.ws !== ws || state.closing) return;
    if (e.code === 4404) { status("Cannot join: " + (e.reason || "room or channel not found")); return; }
    const wait = Math.min(10000, 500 * 2 ** state.retry++);
    status("Disconnected; reconnecting…");
    setTimeout(() => { if (state.ws === ws) connect(); }, wait);
  };
}

function showTyping(event) {
  const who = (event.source && event.source.participant_id) || "someone";
  if (who === me()) return;
  $("typing").textContent = who + " is typing…";
  clearTimeout(showTyping.timer);
  showTyping.timer = setTimeout(() => { $("typing").textContent = ""; }, 3000);
}

function setComposer(on) { $("message").disabled = !on; $("send").disabled = !on; if (on) $("message").focus(); }

async function open(id) {
  if (state.ws) { state.closing = true; state.ws.close(); }
  state.closing = false;
  Object.assign(state, { room: id, ws: null, lastIndex: null, seen: new Set(), retry: 0 });
  $("messages").replaceChildren();
  status("Opening room " + id + "…");
  try {
    const channel = await ensureRoom(id);
    if (!channel) { status("This server has no websocket channel."); return; }
    state.channel = channel.id;
    await loadTimeline(id);
    history.replaceState(null, "", "?room=" + encodeURIComponent(id));
    connect();
    loadRooms();
    showCall();
  } catch (e) { status("Cannot open the room: " + e.message); }
}

$("join").addEventListener("submit", (e) => { e.preventDefault(); const id = $("room").value.trim(); if (id) open(id); });
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("message").value.trim();
  if (!text || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "send", content: { type: "text", text }, client_ref: String(Date.now()) }));
  $("message").value = "";
});
$("message").addEventListener("input", () => {
  const now = Date.now();
  if (state.ws && state.ws.readyState === WebSocket.OPEN && now - state.typingAt > 2000) {
    state.typingAt = now;
    state.ws.send(JSON.stringify({ type: "typing" }));
  }
});
$("name").value = localStorage.getItem("roomkit.name") || "";
$("key").value = sessionStorage.getItem("roomkit.key") || "";
$("name").addEventListener("change", () => localStorage.setItem("roomkit.name", me()));
$("key").addEventListener("change", () => sessionStorage.setItem("roomkit.key", key()));
loadRooms();
const initial = new URLSearchParams(location.search).get("room");
if (initial) { $("room").value = initial; open(initial); }

// ---- Voice calls from the page (the browser media protocol, docs/api.md):
// the microphone runs through an AudioWorklet that resamples it to 16 kHz
// mono PCM16 and posts 20 ms frames over /voice/browser/media; the agent's
// audio (same format) plays through a short jitter queue; `clear` stops it
// at once; transcripts show live (interim grey, final solid).
const CALL_RATE = 16000;
const WORKLET = `
class RoomKitMic extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / ${CALL_RATE};
    this.acc = 0; this.n = 0; this.pos = 0;
    this.out = new Int16Array(${CALL_RATE / 50}); this.k = 0;
  }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      // A box filter as wide as the step: averaging is the low-pass.
      this.acc += ch[i]; this.n++; this.pos += 1;
      if (this.pos < this.ratio) continue;
      this.pos -= this.ratio;
      const v = Math.max(-1, Math.min(1, this.acc / this.n));
      this.acc = 0; this.n = 0;
      this.out[this.k++] = Math.round(v * 32767);
      if (this.k === this.out.length) {
        this.port.postMessage(this.out.buffer, [this.out.buffer]);
        this.out = new Int16Array(${CALL_RATE / 50}); this.k = 0;
      }
    }
    return true;
  }
}
registerProcessor("roomkit-mic", RoomKitMic);
`;
const call = { ws: null, ctx: null, stream: null, node: null, pc: null, audio: null, statsTimer: null, next: 0, playing: [], interim: null, stats: { audioBytes: 0, audioFrames: 0, sentFrames: 0, transcripts: 0, errors: 0, rtcBytesReceived: 0, rtcPacketsReceived: 0, rtcAudioEnergy: 0, rtcPacketsSent: 0 } };
window.roomkitCall = call.stats;

function callStatus(text) { $("call-status").textContent = text; }
function callUi(active) { $("call-start").hidden = active; $("call-hangup").hidden = !active; }

function transcriptLine(cls, text) {
  const li = document.createElement("li");
  li.className = cls;
  li.textContent = text;
  $("transcript").append(li);
  $("transcript").scrollTop = $("transcript").scrollHeight;
  return li;
}

function onTranscript(text, final) {
  if (!call.interim) call.interim = transcriptLine("interim", "");
  call.interim.textContent = text;
  if (final) { call.interim.className = "final"; call.interim = null; call.stats.transcripts++; }
}

function playPcm(buf) {
  const pcm = new Int16Array(buf);
  call.stats.audioBytes += buf.byteLength;
  call.stats.audioFrames++;
  $("transcript").dataset.audioBytes = String(call.stats.audioBytes);
  if (!pcm.length || !call.ctx) return;
  const audio = call.ctx.createBuffer(1, pcm.length, CALL_RATE);
  const data = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const src = call.ctx.createBufferSource();
  src.buffer = audio;
  src.connect(call.ctx.destination);
  // A 60 ms jitter queue: late frames start a little ahead of now.
  const now = call.ctx.currentTime;
  if (call.next < now + 0.02) call.next = now + 0.06;
  src.start(call.next);
  call.next += audio.duration;
  call.playing.push(src);
  src.onended = () => { call.playing = call.playing.filter((s) => s !== src); };
}

function clearPlayback() {
  for (const s of call.playing) { try { s.stop(); } catch (e) { /* already stopped */ } }
  call.playing = [];
  call.next = 0;
}

function onMark(name) {
  // Echoed once everything queued before it has played.
  const wait = call.ctx ? Math.max(0, call.next - call.ctx.currentTime) : 0;
  const ws = call.ws;
  setTimeout(() => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "mark", name })); }, wait * 1000);
}

async function attachVoice(room) {
  const channels = await api("GET", "/channels?limit=500");
  for (const c of channels.items.filter((c) => c.type === "voice")) {
    try { await api("POST", "/rooms/" + encodeURIComponent(room) + "/channels", { channel_id: c.id }); }
    catch (e) { if (e.status !== 409) throw e; }
  }
}

// ---- WebRTC calls (`transport = "webrtc"`): the microphone goes out as an
// Opus track of an RTCPeerConnection, with the browser's own echo
// cancellation, noise suppression and gain control; the offer and answer
// travel over /voice/webrtc/media, which stays open to hang up; the agent's
// audio arrives as the remote track and plays in an <audio> element.
async function startWebRtcCall() {
  callUi(true);
  callStatus("Starting the call…");
  let pc;
  try {
    await attachVoice(state.room);
    call.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    pc = new RTCPeerConnection({ iceServers: [] });
    call.pc = pc;
    for (const track of call.stream.getAudioTracks()) pc.addTrack(track, call.stream);
    pc.ontrack = (e) => {
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = e.streams[0] || new MediaStream([e.track]);
      call.audio = audio;
      audio.play().catch(() => { /* autoplay may wait for a gesture */ });
    };
    await pc.setLocalDescription(await pc.createOffer());
    // No trickle: wait for the host candidates (loopback and LAN are quick).
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") { resolve(); return; }
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 2000);
    });
  } catch (e) { callStatus("Cannot start the call: " + e.message); endCall(); return; }
  const params = new URLSearchParams();
  if (key()) params.set("token", key());
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/voice/webrtc/media?" + params);
  call.ws = ws;
  let opened = false;
  ws.onopen = () => { opened = true; ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp, room_id: state.room, participant: me() })); };
  ws.onmessage = async (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    if (msg.type === "answer") {
      try {
        await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        callStatus("In call (WebRTC)");
        call.statsTimer = setInterval(webRtcStats, 500);
      } catch (e) { call.stats.errors++; callStatus("Call error: " + e.message); }
    } else if (msg.type === "ended") {
      callStatus("Call ended (" + msg.reason + ")");
    }
  };
  ws.onclose = () => {
    if (call.ws !== ws) return;
    if (!opened) callStatus("Cannot call: the server refused the media socket (no WebRTC voice channel, or a wrong key)");
    else if (!$("call-status").textContent.startsWith("Call ended")) callStatus("Call ended");
    endCall();
  };
}

// What the peer connection received, for the page and for tests.
async function webRtcStats() {
  if (!call.pc) return;
  const report = await call.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      call.stats.rtcBytesReceived = s.bytesReceived || 0;
      call.stats.rtcPacketsReceived = s.packetsReceived || 0;
      call.stats.rtcAudioEnergy = s.totalAudioEnergy || 0;
    }
    if (s.type === "outbound-rtp" && s.kind === "audio") call.stats.rtcPacketsSent = s.packetsSent || 0;
  });
}

async function startCall() {
  if (call.ws || !state.room) return;
  if ($("call-mode").value === "webrtc") { await startWebRtcCall(); return; }
  callUi(true);
  callStatus("Starting the call…");
  try {
    await attachVoice(state.room);
    call.ctx = new AudioContext();
    await call.ctx.resume();
    call.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
    await call.ctx.audioWorklet.addModule(url);
    URL.revokeObjectURL(url);
  } catch (e) { callStatus("Cannot start the call: " + e.message); endCall(); return; }
  const params = new URLSearchParams();
  if (key()) params.set("token", key());
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/voice/browser/media?" + params);
  ws.binaryType = "arraybuffer";
  call.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ type: "start", sample_rate: CALL_RATE, encoding: "pcm16", room_id: state.room, participant: me(), name: me() }));
  ws.onmessage = (m) => {
    if (typeof m.data !== "string") { playPcm(m.data); return; }
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    switch (msg.type) {
      case "started": {
        callStatus("In call (" + msg.call_id + ")");
        const source = call.ctx.createMediaStreamSource(call.stream);
        call.node = new AudioWorkletNode(call.ctx, "roomkit-mic");
        call.node.port.onmessage = (f) => { if (ws.readyState === WebSocket.OPEN) { ws.send(f.data); call.stats.sentFrames++; } };
        source.connect(call.node);
        // Silent, but connected: the graph only renders what reaches the output.
        const mute = call.ctx.createGain();
        mute.gain.value = 0;
        call.node.connect(mute).connect(call.ctx.destination);
        break;
      }
      case "transcript": onTranscript(msg.text, msg.final); break;
      case "agent_text": transcriptLine("agent", msg.text); break;
      case "clear": clearPlayback(); break;
      case "mark": onMark(msg.name); break;
      case "error": call.stats.errors++; callStatus("Call error: " + msg.error.message); break;
      case "ended": callStatus("Call ended (" + msg.reason + ")"); break;
      default: break;
    }
  };
  let opened = false;
  ws.addEventListener("open", () => { opened = true; });
  ws.onclose = () => {
    if (call.ws !== ws) return;
    if (!opened) callStatus("Cannot call: the server refused the media socket (no browser voice channel, or a wrong key)");
    else if (!$("call-status").textContent.startsWith("Call ended")) callStatus("Call ended");
    endCall();
  };
}

function endCall() {
  const ws = call.ws;
  call.ws = null;
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify({ type: "stop" })); ws.close(); }
  clearPlayback();
  if (call.node) { call.node.port.onmessage = null; call.node.disconnect(); call.node = null; }
  if (call.statsTimer) { clearInterval(call.statsTimer); call.statsTimer = null; }
  if (call.pc) { call.pc.close(); call.pc = null; }
  if (call.audio) { call.audio.srcObject = null; call.audio = null; }
  if (call.stream) { call.stream.getTracks().forEach((t) => t.stop()); call.stream = null; }
  if (call.ctx) { call.ctx.close(); call.ctx = null; }
  call.interim = null;
  callUi(false);
}

async function showCall() {
  try {
    const channels = await api("GET", "/channels?limit=500");
    $("call").hidden = !channels.items.some((c) => c.type === "voice");
  } catch (e) { $("call").hidden = true; }
}

$("call-start").addEventListener("click", startCall);
$("call-hangup").addEventListener("click", () => { callStatus("Call ended"); endCall(); });
