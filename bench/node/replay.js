// Replay of missed events to the OFFICIAL client (socket.io-client 4.8.1, websocket
// transport): Herald beside a Socket.IO 4.8 server's connection state recovery, each
// repetition back to back. Usage: node replay.js '<json>' with
//   {"missed": N, "reps": R, "warmup": W,
//    "herald": {"url", "token", "stream", "epoch"},
//    "socketio": {"url", "payload": {...}, "meta": {...}}}
// Herald: connect with auth.positions {stream: {offset: 0, epoch}}; time from the connect
//   call to the N-th missed event.
// Socket.IO: connect; one event (the client then holds an offset, which a recovery needs);
//   close the transport (the server keeps the session, "transport close"); POST /emit the
//   N events (each [payload, meta], Herald's sizes) to the socket's room; time from the
//   reconnect call to the N-th event.
// Every event is checked: all N arrive, in order, and the connection says it recovered
// (socket.recovered; Herald's `connected.recovered[stream]`); anything else is an error.
// Prints one JSON line per repetition: {"herald": ms, "socketio": ms, "warmup": bool}.
"use strict";
const { io } = require("socket.io-client");
const http = require("http");

const opts = JSON.parse(process.argv[2]);
const now = () => performance.now();

function post(url, body) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(url, { method: "POST", headers: {
      "content-type": "application/json", "content-length": data.length } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`POST ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end(data);
  });
}

function once(emitter, name) { return new Promise((resolve) => emitter.once(name, resolve)); }

async function socketioOnce(peer) {
  const socket = io(peer.url, { transports: ["websocket"], reconnection: false });
  await once(socket, "connect");
  // One event first: the client then holds an offset, which a recovery needs.
  const first = once(socket, "first");
  await post(`${peer.url}/emit`, { room: "missed", event: "first", data: [[{}]] });
  await first;
  let got = 0, disorder = 0, done;
  const finished = new Promise((resolve) => { done = resolve; });
  socket.on("n", (payload, meta) => {
    if (meta.offset !== got + 1) disorder += 1;
    got += 1;
    if (got === opts.missed) done(now());
  });
  const gone = once(socket, "disconnect");
  socket.io.engine.close(); // "transport close": the server keeps the session
  await gone;
  await new Promise((r) => setTimeout(r, 50)); // the server has seen the close
  const data = [];
  for (let i = 0; i < opts.missed; i++) {
    data.push([{ ...peer.payload, title: `Update ${i}` }, { ...peer.meta, offset: i + 1 }]);
  }
  await post(`${peer.url}/emit`, { room: "missed", event: "n", data });
  const start = now();
  socket.connect();
  await once(socket, "connect");
  const end = await finished;
  const recovered = socket.recovered;
  socket.disconnect();
  if (!recovered || got !== opts.missed || disorder) {
    throw new Error(`socket.io recovery: recovered=${recovered} got=${got} disorder=${disorder}`);
  }
  return end - start;
}

async function heraldOnce(peer) {
  const positions = { [peer.stream]: { offset: 0, epoch: peer.epoch } };
  let next = 1, disorder = 0, done, recovered = null;
  const finished = new Promise((resolve) => { done = resolve; });
  const start = now();
  const socket = io(peer.url, { transports: ["websocket"], reconnection: false,
    auth: { token: peer.token, positions } });
  socket.on("connected", (info) => { recovered = info.recovered[peer.stream]; });
  socket.onAny((name, payload, meta) => {
    if (!meta || meta.stream !== peer.stream) return;
    if (meta.offset !== next) disorder += 1;
    next = meta.offset + 1;
    if (meta.offset === opts.missed) done(now());
  });
  socket.on("connect_error", (err) => done(NaN, err));
  const end = await finished;
  socket.disconnect();
  if (recovered !== true || next !== opts.missed + 1 || disorder) {
    throw new Error(`herald replay: recovered=${recovered} next=${next} disorder=${disorder}`);
  }
  return end - start;
}

(async () => {
  const total = (opts.warmup || 0) + (opts.reps || 1);
  for (let rep = 0; rep < total; rep++) {
    const herald = await heraldOnce(opts.herald);
    const socketio = await socketioOnce(opts.socketio);
    process.stdout.write(JSON.stringify({ herald, socketio, warmup: rep < (opts.warmup || 0) }) + "\n");
  }
  process.exit(0);
})().catch((err) => { process.stderr.write(String(err && err.stack || err) + "\n"); process.exit(1); });
