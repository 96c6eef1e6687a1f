// The bench's load client: many websocket clients speaking Engine.IO 4 / Socket.IO 5 by
// hand (far lighter than socket.io-client, so that the server is what is measured).
// Commands, one JSON object per line on stdin; one JSON answer per line on stdout:
//   {"cmd":"connect","url":"http://h:p","tokens":[...],"inflight":100}
//       -> {"connected":n,"failed":n,"seconds":s} once every socket has its `connected` event
//   {"cmd":"expect","count":k}  -> {"armed":n} at once, then {"t_last":epoch_s,"got":k} when
//                                  k more events have arrived
//   {"cmd":"bytes"}            -> {"bytes":n,"wire":n} event payload bytes / TCP bytes read
//   {"cmd":"close"}            -> closes everything and exits
"use strict";
const readline = require("readline");
const WebSocket = require("ws");

const sockets = [];
let received = 0;
let bytes = 0;
let waiting = null; // {target, resolve}

function reply(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }
function now() { return (performance.timeOrigin + performance.now()) / 1000; }

// A socket that connects with positions and must receive, in order, the `expect` events
// of `stream` after `after`; resolves {ok, at} when it has them all (ok false: a gap).
function recoverOne(url, token, positions, stream, after, expect) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket",
      { perMessageDeflate: false });
    let next = after + 1, done = false;
    const finish = (ok) => { if (!done) { done = true; resolve({ ok, at: now(), ws }); } };
    ws.on("message", (raw) => {
      const text = raw.toString();
      if (text === "2") { ws.send("3"); return; }
      if (text.startsWith("0{")) { ws.send("40" + JSON.stringify({ token, positions })); return; }
      if (text.startsWith("44")) { finish(false); return; }
      if (text.startsWith("42") && !text.startsWith('42["connected"')) {
        const args = JSON.parse(text.slice(2));
        const meta = args[2];
        if (!meta || meta.stream !== stream) return;
        if (meta.offset < next) return; // a duplicate (live and replayed): allowed
        if (meta.offset !== next) { finish(false); return; }
        next += 1;
        if (next > after + expect) finish(true);
      }
    });
    ws.on("error", () => finish(false));
    ws.on("close", () => finish(false));
  });
}

function openOne(url, token, deflate) {
  return new Promise((resolve) => {
    const ws = new WebSocket(url.replace(/^http/, "ws") + "/socket.io/?EIO=4&transport=websocket",
      { perMessageDeflate: deflate });
    let done = false;
    const finish = (ok) => { if (!done) { done = true; resolve(ok ? ws : null); } };
    ws.on("message", (raw, isBinary) => {
      const text = isBinary ? "" : raw.toString();
      if (text === "2") { ws.send("3"); return; }
      if (text.startsWith("0{")) { ws.send("40" + JSON.stringify({ token })); return; }
      if (text.startsWith("44")) { finish(false); ws.close(); return; }
      if (text.startsWith('42["connected"')) { finish(true); return; }
      if (text.startsWith("42")) {
        received += 1;
        bytes += raw.length;
        if (waiting && received >= waiting.target) {
          const w = waiting; waiting = null; w.resolve();
        }
      }
    });
    ws.on("error", () => finish(false));
    ws.on("close", () => finish(false));
  });
}

async function connectAll(url, tokens, inflight, deflate) {
  const started = now();
  let next = 0, ok = 0, failed = 0;
  async function lane() {
    while (next < tokens.length) {
      const token = tokens[next++];
      const ws = await openOne(url, token, deflate);
      if (ws) { sockets.push(ws); ok += 1; } else { failed += 1; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(inflight, tokens.length) }, lane));
  return { connected: ok, failed, seconds: now() - started };
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const msg = JSON.parse(line);
  if (msg.cmd === "connect") {
    reply(await connectAll(msg.url, msg.tokens, msg.inflight || 100, !!msg.deflate));
  } else if (msg.cmd === "storm") {
    const started = now();
    let i = 0, ok = 0, lost = 0, last = started;
    async function lane() {
      while (i < msg.tokens.length) {
        const token = msg.tokens[i++];
        const r = await recoverOne(msg.url, token, msg.positions, msg.stream, msg.after, msg.expect);
        if (r.ok) { ok += 1; last = Math.max(last, r.at); sockets.push(r.ws); } else { lost += 1; }
      }
    }
    await Promise.all(Array.from({ length: Math.min(msg.inflight || 100, msg.tokens.length) }, lane));
    reply({ recovered: ok, failed: lost, seconds: last - started });
  } else if (msg.cmd === "expect") {
    const target = received + msg.count;
    reply({ armed: target });
    await new Promise((resolve) => { waiting = { target, resolve }; });
    reply({ t_last: now(), got: msg.count });
  } else if (msg.cmd === "bytes") {
    // wire: bytes read from the TCP sockets (frames as sent, compressed or not)
    let wire = 0;
    for (const ws of sockets) wire += ws._socket ? ws._socket.bytesRead : 0;
    reply({ bytes, received, wire });
  } else if (msg.cmd === "close") {
    for (const ws of sockets) ws.terminate();
    reply({ closed: sockets.length });
    process.exit(0);
  }
});
reply({ ready: true });
