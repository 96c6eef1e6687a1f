// The replay peer: a socket.io 4.8 server with its in-memory connection state recovery
// (`connectionStateRecovery`), one process. Every socket joins the room "missed".
// POST /emit {room, event, data: [[args...], ...]} emits each item to the room, in order,
// and answers once done. Prints "recovery peer ready <port>". Usage: node recovery_server.js <port>
"use strict";
const { createEmitServer } = require("./emit");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const httpServer = createEmitServer(() => io);

const io = new Server(httpServer, {
  perMessageDeflate: false,
  connectionStateRecovery: { maxDisconnectionDuration: 5 * 60 * 1000, skipMiddlewares: true },
});
io.on("connection", (socket) => {
  if (!socket.recovered) socket.join("missed");
});

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`recovery peer ready ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
