// The reconnect storm's load client: many raw websocket clients (Engine.IO 4 / Socket.IO 5
// by hand, like load.js) that each track their streams as a Herald client does: the last
// offset seen of every stream, checked in order, and on a lost connection a reconnect with
// those positions, through a round-robin "load balancer" over the nodes' URLs.
// Commands, one JSON object per line on stdin; one JSON answer per line on stdout:
//   {"cmd":"open","urls":[...],"sockets":[{"token":t,"home":i,"positions":{...}}],
//    "inflight":100,"jitter":1.0}
//       -> {"connected":n,"failed":n,"seconds":s} once every socket has its `connected`
//          event (socket k opens on urls[home]). From then on, a socket whose connection
//          closes reconnects after a random delay in [0, jitter] s, each attempt to the
//          next URL in turn, retrying with backoff, with {stream: {offset, epoch}} of every
//          stream it tracks.
//   {"cmd":"until","heads":{stream:offset},"timeout":s}
//       -> once every socket has every event of its streams up to `heads` (or at timeout):
//          {"complete":n,"behind":n,"t_last":epoch_s, ...counters} (see `counters`)
//   {"cmd":"counters"} -> the counters now
//   {"cmd":"close"}    -> closes everything and exits
"use strict";
const readline = require("readline");
const WebSocket = require("ws");

const sockets = [];
let rr = 0; // the load balancer's round-robin position
let jitter = 1.0;
const c = {
  gaps: 0, // an event after a missing offset (never allowed)
  early: 0, // a stream event before `connected` (never allowed)
  presenceEarly: 0, // a presence event before `connected` (never allowed)
  resets: 0, // a reconnect whose stream could not be recovered (`recovered: false`)
  duplicates: 0, // an event seen again (allowed: at-least-once)
  events: 0, // events that moved a stream forward
  closes: 0, // connections lost
  closeCodes: {}, // how they were lost, by websocket close code
  reconnects: 0, // reconnects that got `connected`
  refused: 0, // attempts that failed (node down, refused, closed before `connected`)
  tReconnected: 0, // when the last reconnect got `connected`
};
let target = null; // {heads, complete, tLast, resolve}

function reply(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }
function now() { return (performance.timeOrigin + performance.now()) / 1000; }

function counters() {
  let open = 0, streams = 0;
  for (const s of sockets) { open += s.live ? 1 : 0; streams += s.last.size; }
  return { ...c, sockets: sockets.length, open, streams };
}

// Streams of socket `s` still short of the armed heads.
function behind(s) {
  let n = 0;
  for (const [stream, last] of s.last) {
    const head = target.heads[stream];
    if (head !== undefined && last < head) n += 1;
  }
  return n;
}

function advanced(s, stream, from, to) {
  if (!target || s.done) return;
  const head = target.heads[stream];
  if (head !== undefined && from < head && to >= head && behind(s) === 0) complete(s);
}

function complete(s) {
  s.done = true;
  target.complete += 1;
  target.tLast = now();
  if (target.complete === sockets.length) { const t = target; target = null; t.resolve(); }
}

function onConnected(s, payload) {
  const heads = payload.positions || {};
  const recovered = payload.recovered || {};
  for (const [stream, head] of Object.entries(heads)) {
    if (s.last.has(stream) || s.asked[stream]) {
      if (recovered[stream]) {
        if (!s.last.has(stream)) s.last.set(stream, s.asked[stream].offset);
      } else {
        if (s.opened) c.resets += 1;
        s.last.set(stream, head.offset);
      }
    } else {
      s.last.set(stream, head.offset);
    }
    s.epochs.set(stream, head.epoch);
  }
  for (const stream of s.last.keys()) if (!(stream in heads)) c.resets += 1;
  if (target && !s.done && behind(s) === 0) complete(s);
}

function onEvent(s, meta) {
  const last = s.last.get(meta.stream);
  if (last === undefined) return;
  if (meta.offset <= last) { c.duplicates += 1; return; }
  if (meta.offset !== last + 1) c.gaps += 1;
  s.last.set(meta.stream, meta.offset);
  c.events += 1;
  advanced(s, meta.stream, last, meta.offset);
}

// One connection attempt; resolves true once `connected` arrived, false if it failed.
function attempt(s, url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket",
      { perMessageDeflate: false });
    let connected = false, settled = false;
    // No `connected` within 30 s (a node too busy): given up, retried like a failure.
    const timer = setTimeout(() => { if (!connected) ws.terminate(); }, 30000);
    const settle = (ok) => { if (!settled) { settled = true; clearTimeout(timer); resolve(ok); } };
    ws.on("message", (raw) => {
      const text = raw.toString();
      if (text === "2") { ws.send("3"); return; }
      if (text.startsWith("0{")) {
        const positions = {};
        for (const [stream, offset] of s.last) {
          positions[stream] = { offset, epoch: s.epochs.get(stream) };
        }
        s.asked = s.opened ? positions : s.initial;
        ws.send("40" + JSON.stringify({ token: s.token, positions: s.asked }));
        return;
      }
      if (text.startsWith("44")) { ws.terminate(); return; }
      if (!text.startsWith("42")) return;
      const args = JSON.parse(text.slice(2));
      if (args[0] === "connected") {
        onConnected(s, args[1]);
        connected = true;
        s.ws = ws;
        s.live = true;
        if (s.opened) { c.reconnects += 1; c.tReconnected = now(); }
        s.opened = true;
        settle(true);
        return;
      }
      const meta = args[2];
      if (!meta || typeof meta.offset !== "number") { // ephemeral (presence, typing)
        if (!connected && String(args[0]).startsWith("presence-")) c.presenceEarly += 1;
        return;
      }
      if (!connected) { c.early += 1; return; }
      onEvent(s, meta);
    });
    ws.on("error", () => {});
    ws.on("close", (code) => {
      if (!connected) { settle(false); return; }
      s.live = false;
      if (s.closing) return;
      c.closes += 1;
      c.closeCodes[code] = (c.closeCodes[code] || 0) + 1;
      reconnect(s);
    });
  });
}

function sleep(seconds) { return new Promise((r) => setTimeout(r, seconds * 1000)); }

async function reconnect(s) {
  await sleep(Math.random() * jitter);
  for (let n = 0; !s.closing; n += 1) {
    const urls = s.urls;
    if (await attempt(s, urls[rr++ % urls.length])) return;
    c.refused += 1;
    await sleep(Math.min(5, 0.5 * 2 ** n) * (0.5 + Math.random()));
  }
}

async function openAll(msg) {
  jitter = msg.jitter ?? jitter;
  const started = now();
  const batch = msg.sockets.map((spec) => ({
    token: spec.token, urls: msg.urls, initial: spec.positions || {}, asked: {},
    last: new Map(), epochs: new Map(), opened: false, live: false, closing: false,
    done: false, ws: null,
  }));
  let next = 0, ok = 0, failed = 0;
  async function lane() {
    while (next < batch.length) {
      const i = next++;
      const s = batch[i];
      let opened = false;
      for (let n = 0; n < 5 && !opened; n += 1) {  // a busy node: retried, as clients do
        if (n > 0) { c.refused += 1; await sleep(0.5 * 2 ** n * (0.5 + Math.random())); }
        opened = await attempt(s, msg.urls[msg.sockets[i].home]);
      }
      if (opened) { sockets.push(s); ok += 1; } else { failed += 1; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(msg.inflight || 100, batch.length) }, lane));
  return { connected: ok, failed, seconds: now() - started };
}

async function until(msg) {
  const waiting = new Promise((resolve) => {
    target = { heads: msg.heads, complete: 0, tLast: now(), resolve };
  });
  const t = target;
  for (const s of sockets) { s.done = false; }
  for (const s of sockets) if (target && behind(s) === 0) complete(s);
  const timer = sleep(msg.timeout || 300);
  await Promise.race([waiting, timer]);
  target = null;
  return { complete: t.complete, behind: sockets.length - t.complete, t_last: t.tLast,
           ...counters() };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const msg = JSON.parse(line);
  if (msg.cmd === "open") {
    reply(await openAll(msg));
  } else if (msg.cmd === "until") {
    reply(await until(msg));
  } else if (msg.cmd === "counters") {
    reply(counters());
  } else if (msg.cmd === "close") {
    for (const s of sockets) { s.closing = true; if (s.ws) s.ws.terminate(); }
    reply({ closed: sockets.length });
    process.exit(0);
  }
});
reply({ ready: true });
