// The bench's Node peer: a bare socket.io 4.8 server doing what Herald's web node does on
// connect (an HS256 JWT check of `auth.token`, joins, a `connected` event), one process.
// POST /emit {room, event, data: [[args...], ...]} emits each item to the room, in order.
// Prints "node peer ready <port>" once listening. Usage: node server.js <port> <secret>
"use strict";
const { createEmitServer } = require("./emit");
const jwt = require("jsonwebtoken");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const secret = process.argv[3] || process.env.JWT_SECRET;

const httpServer = createEmitServer(() => io);

const io = new Server(httpServer, { cors: { origin: "*" }, perMessageDeflate: process.env.PEER_DEFLATE === "1" });
io.use((socket, next) => {
  try {
    const claims = jwt.verify(String(socket.handshake.auth && socket.handshake.auth.token),
      secret, { algorithms: ["HS256"] });
    socket.data.who = claims;
    next();
  } catch (err) {
    next(new Error("Authentication error"));
  }
});
io.on("connection", (socket) => {
  const who = socket.data.who;
  socket.join([`user-${who.sub}`, who.role === "client" ? "clients" : `${who.role}s`]);
  socket.emit("connected", { userId: Number(who.sub), role: who.role, recovered: {} });
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`node peer ready ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
