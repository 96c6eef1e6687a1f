// The replay peer: a socket.io 4.8 server with its in-memory connection state recovery
// (`connectionStateRecovery`), one process. Every socket joins the room "missed".
// POST /emit {room, event, data: [[args...], ...]} emits each item to the room, in order,
// and answers once done. Prints "recovery peer ready <port>". Usage: node recovery_server.js <port>
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const httpServer = http.createServer((req, res) => {
  if (req.method === "POST" && req.url === "/emit") {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString());
      for (const args of body.data) io.to(body.room).emit(body.event, ...args);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: true, sockets: io.of("/").sockets.size }));
    });
    return;
  }
  if (!req.url.startsWith("/socket.io/")) {
    res.writeHead(404);
    res.end();
  }
});

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
