// Hoichan session page: a WebRTC mesh through the signaling socket, plus synchronized viewing.
// The join token arrives in the URL fragment (never sent to a server, never in access logs).
"use strict";
(() => {
  const sessionId = location.pathname.split("/").slice(-2)[0];
  const FATAL = new Set([1000, 4000, 4001, 4401, 4403, 4404, 4409, 4429]);
  const state = {
    token: new URLSearchParams(location.hash.slice(1)).get("token"),
    me: null, role: null, media: true, iceServers: [], ws: null, leaving: false,
    retry: 0, renewTimer: null, local: null, camera: null, screen: null,
    roster: new Map(), online: new Set(), peers: new Map(), presenter: null,
  };
  history.replaceState(null, "", location.pathname);
  const $ = (id) => document.getElementById(id);

  function setStatus(text) { $("status").textContent = text; }
  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function connect() {
    if (!state.token) { setStatus("no join token: open this page from Hoichan"); return; }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/sessions/${sessionId}/signal`);
    state.ws = ws;
    ws.onopen = () => ws.send(JSON.stringify({ type: "join", token: state.token }));
    ws.onmessage = (event) => dispatch(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      clearInterval(state.renewTimer);
      if (state.leaving || FATAL.has(event.code)) {
        setStatus(event.reason || "disconnected");
        hangUpAll();
        return;
      }
      const delay = Math.min(10000, 500 * 2 ** state.retry++);
      setStatus(`connection lost; reconnecting in ${Math.round(delay / 1000)} s…`);
      setTimeout(connect, delay);
    };
  }

  const handlers = {
    welcome: async (m) => {
      state.retry = 0;
      state.me = m.user_id; state.role = m.role; state.media = m.media;
      state.iceServers = m.ice_servers || []; state.token = m.token;
      state.roster = new Map(m.participants.map((p) => [p.user_id, p]));
      state.online = new Set(m.online);
      state.presenter = m.presenter;
      $("my-role").textContent = `(${m.role})`;
      clearInterval(state.renewTimer);
      state.renewTimer = setInterval(() => send({ type: "renew" }), (m.expires_in * 1000) / 2);
      setStatus("connected");
      showView(m.view);
      render();
      if (state.media) {
        await ensureLocalMedia();
        for (const id of state.online) if (id !== state.me) restartPeer(id);
      }
    },
    "peer-joined": (m) => {
      state.online.add(m.peer.user_id);
      render();
      if (state.media) restartPeer(m.peer.user_id);
    },
    "peer-left": (m) => { state.online.delete(m.user_id); closePeer(m.user_id); render(); },
    signal: (m) => onSignal(m.from, m.data),
    presenter: (m) => { state.presenter = m.user_id; render(); },
    view: (m) => showView(m.state),
    token: (m) => { state.token = m.token; },
    ended: () => { state.leaving = true; setStatus("the session has ended"); hangUpAll(); },
    error: (m) => setStatus(m.detail),
    pong: () => {},
  };
  // Handle messages one at a time: an offer must wait until the welcome has opened the camera.
  let inbox = Promise.resolve();
  function dispatch(message) {
    const handler = handlers[message.type] || (() => {});
    inbox = inbox.then(() => handler(message)).catch((err) => setStatus(String(err)));
  }

  async function ensureLocalMedia() {
    if (state.local || state.role === "attendee") return;
    for (const constraints of [{ audio: true, video: true }, { video: true }, { audio: true }]) {
      try {
        state.local = await navigator.mediaDevices.getUserMedia(constraints);
        break;
      } catch (err) { setStatus(`camera/microphone: ${err.name}`); }
    }
    if (!state.local) return;
    state.camera = state.local.getVideoTracks()[0] || null;
    $("local").srcObject = state.local;
  }

  // One offerer per pair, so offers never cross: the peer with the smaller user id offers.
  function restartPeer(id) {
    closePeer(id);
    if (state.me < id) makeOffer(id);
  }

  function newPeer(id) {
    const pc = new RTCPeerConnection({ iceServers: state.iceServers });
    const peer = { pc, pendingCandidates: [], tile: null };
    state.peers.set(id, peer);
    pc.onicecandidate = (e) => { if (e.candidate) send({ type: "signal", to: id, data: { candidate: e.candidate.toJSON() } }); };
    pc.ontrack = (e) => attachRemote(id, peer, e);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && state.peers.get(id) === peer && state.me < id) restartPeer(id);
    };
    return peer;
  }

  function addLocalTracks(pc, offering) {
    if (state.local) {
      for (const track of state.local.getTracks()) pc.addTrack(track, state.local);
    } else if (offering) {
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
  }

  async function makeOffer(id) {
    const peer = newPeer(id);
    addLocalTracks(peer.pc, true);
    await peer.pc.setLocalDescription(await peer.pc.createOffer());
    send({ type: "signal", to: id, data: { sdp: peer.pc.localDescription.toJSON() } });
  }

  async function onSignal(from, data) {
    if (data.sdp && data.sdp.type === "offer") {
      closePeer(from);
      const peer = newPeer(from);
      addLocalTracks(peer.pc, false);
      await peer.pc.setRemoteDescription(data.sdp);
      await flushCandidates(peer);
      await peer.pc.setLocalDescription(await peer.pc.createAnswer());
      send({ type: "signal", to: from, data: { sdp: peer.pc.localDescription.toJSON() } });
      return;
    }
    const peer = state.peers.get(from);
    if (!peer) return;
    if (data.sdp) {
      await peer.pc.setRemoteDescription(data.sdp);
      await flushCandidates(peer);
    } else if (data.candidate) {
      if (peer.pc.remoteDescription) await peer.pc.addIceCandidate(data.candidate).catch(() => {});
      else peer.pendingCandidates.push(data.candidate);
    }
  }

  async function flushCandidates(peer) {
    for (const c of peer.pendingCandidates.splice(0)) await peer.pc.addIceCandidate(c).catch(() => {});
  }

  function attachRemote(id, peer, event) {
    if (!peer.tile) {
      peer.tile = document.createElement("figure");
      peer.tile.className = "tile";
      const video = document.createElement("video");
      video.className = "remote"; video.autoplay = true; video.playsInline = true; video.muted = true;
      video.dataset.user = id;
      const audio = document.createElement("audio");
      audio.autoplay = true;
      const caption = document.createElement("figcaption");
      caption.textContent = (state.roster.get(id) || { name: id }).name;
      peer.tile.append(video, audio, caption);
      $("videos").append(peer.tile);
    }
    const stream = event.streams[0] || new MediaStream([event.track]);
    const [video, audio] = peer.tile.querySelectorAll("video, audio");
    video.srcObject = stream;
    audio.srcObject = stream;
    audio.play().catch(() => { $("sound").hidden = false; });  // autoplay with sound needs a click
  }

  function closePeer(id) {
    const peer = state.peers.get(id);
    if (!peer) return;
    peer.pc.close();
    if (peer.tile) peer.tile.remove();
    state.peers.delete(id);
  }

  function hangUpAll() {
    for (const id of [...state.peers.keys()]) closePeer(id);
    if (state.local) for (const t of state.local.getTracks()) t.stop();
    if (state.screen) for (const t of state.screen.getTracks()) t.stop();
    state.local = null;
  }

  function render() {
    const list = $("participants");
    list.replaceChildren();
    for (const p of state.roster.values()) {
      const item = document.createElement("li");
      const online = state.online.has(p.user_id);
      item.className = online ? "online" : "offline";
      const marks = [p.role, online ? "online" : "invited"];
      if (p.user_id === state.presenter) marks.push("presenting");
      if (p.user_id === state.me) marks.push("you");
      item.textContent = `${p.name} (${marks.join(", ")})`;
      list.append(item);
    }
    const presenter = state.roster.get(state.presenter);
    $("presenter").textContent = presenter ? `${presenter.name} is presenting` : "nobody is presenting";
    $("present").disabled = state.role === "attendee" || state.presenter === state.me;
    for (const id of ["mic", "camera", "screen"]) $(id).disabled = !state.media || state.role === "attendee";
  }

  // Synchronized viewing: the presenter's viewer posts its state here; followers' viewers hear it back.
  function showView(view) {
    $("view").textContent = view ? JSON.stringify(view, null, 2) : "—";
    if (view && window.parent !== window) window.parent.postMessage({ type: "hoichan-view", state: view }, location.origin);
  }
  window.addEventListener("message", (event) => {
    if (event.origin !== location.origin || !event.data || event.data.type !== "hoichan-view") return;
    if (state.presenter === state.me) send({ type: "view", state: event.data.state });
  });

  function toggle(button, on) { button.setAttribute("aria-pressed", String(on)); }
  $("mic").onclick = () => {
    const tracks = state.local ? state.local.getAudioTracks() : [];
    const muted = !tracks.every((t) => !t.enabled);
    for (const t of tracks) t.enabled = !muted;
    toggle($("mic"), muted);
    $("mic").textContent = muted ? "Unmute" : "Mute";
  };
  $("camera").onclick = () => {
    if (!state.camera) return;
    state.camera.enabled = !state.camera.enabled;
    toggle($("camera"), !state.camera.enabled);
    $("camera").textContent = state.camera.enabled ? "Camera off" : "Camera on";
  };
  async function useVideoTrack(track) {
    for (const { pc } of state.peers.values()) {
      const sender = pc.getSenders().find((s) => s.track && s.track.kind === "video");
      if (sender) await sender.replaceTrack(track);
    }
    $("local").srcObject = new MediaStream([track, ...(state.local ? state.local.getAudioTracks() : [])]);
  }
  $("screen").onclick = async () => {
    if (state.screen) {
      for (const t of state.screen.getTracks()) t.stop();
      state.screen = null;
      if (state.camera) await useVideoTrack(state.camera);
      toggle($("screen"), false);
      return;
    }
    try {
      state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
    } catch (err) { setStatus(`screen share: ${err.name}`); return; }
    const track = state.screen.getVideoTracks()[0];
    track.onended = () => { if (state.screen) $("screen").click(); };
    await useVideoTrack(track);
    toggle($("screen"), true);
  };
  $("present").onclick = () => send({ type: "present" });
  $("sound").onclick = () => {
    for (const audio of document.querySelectorAll("audio")) audio.play().catch(() => {});
    $("sound").hidden = true;
  };
  $("leave").onclick = () => {
    state.leaving = true;
    send({ type: "leave" });
    hangUpAll();
    setStatus("you left the session");
  };
  setInterval(() => send({ type: "ping" }), 20000);
  window.hoichanSession = state;  // for tests and the embedding viewer
  connect();
})();
