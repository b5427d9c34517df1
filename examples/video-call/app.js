// A two-party call: the room connects the pages, each adds its camera and microphone, the remote
// tracks play; mute, camera off and hang-up.
import { SignalClient } from 'signal-mesh';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = params.get('room') || 'video-call';
const server = params.get('server') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/signal`;

/** What the page did, for people and for the end-to-end test. */
const state = { ready: false, inCall: false, ended: false, muted: false, cameraOff: false, remoteTracks: 0, error: null };
window.EXAMPLE = state;

let call = null;

function status(text) {
  $('status').textContent = text;
}

async function main() {
  const media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  $('local').srcObject = media;
  const client = await SignalClient.create({ servers: [server] });
  const r = client.room(room, { maxPeers: 1 });
  r.addEventListener('peer', (e) => {
    if (call) return;
    call = e.detail.connection;
    const remote = new MediaStream();
    $('remote').srcObject = remote;
    call.addEventListener('track', (t) => {
      remote.addTrack(t.track);
      state.remoteTracks = remote.getTracks().length;
    });
    for (const track of media.getTracks()) call.addTrack(track, media);
    call.addEventListener('close', () => {
      state.inCall = false;
      state.ended = true;
      status('call ended');
      for (const b of ['mute', 'camera', 'hangup']) $(b).disabled = true;
    });
    state.inCall = true;
    status(`in a call with ${call.peerId.slice(0, 8)}…`);
    for (const b of ['mute', 'camera', 'hangup']) $(b).disabled = false;
  });
  $('mute').addEventListener('click', () => {
    state.muted = !state.muted;
    for (const t of media.getAudioTracks()) t.enabled = !state.muted;
    $('mute').textContent = state.muted ? 'Unmute' : 'Mute';
  });
  $('camera').addEventListener('click', () => {
    state.cameraOff = !state.cameraOff;
    for (const t of media.getVideoTracks()) t.enabled = !state.cameraOff;
    $('camera').textContent = state.cameraOff ? 'Camera on' : 'Camera off';
  });
  $('hangup').addEventListener('click', async () => {
    client.onIncoming = () => false; // no new call from the room after hanging up
    if (call) call.close();
    await r.leave();
  });
  await r.ready;
  state.peerId = client.peerId;
  status(`online as ${client.peerId.slice(0, 8)}…, waiting for the other side`);
  state.ready = true;
}

main().catch((e) => {
  state.error = String(e && e.message);
  status(`error: ${state.error}`);
});
