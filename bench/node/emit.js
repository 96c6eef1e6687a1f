// The HTTP side the bench's Node peers share: POST /emit {room, event, data: [[args...], ...]}
// emits each item to the room, in order, through `io()` and answers once done; GET /healthz;
// socket.io answers /socket.io/ itself, and anything else is a 404.
"use strict";
const http = require("http");

function createEmitServer(io) {
  return http.createServer((req, res) => {
    if (req.method === "POST" && req.url === "/emit") {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const body = JSON.parse(Buffer.concat(chunks).toString());
        for (const args of body.data) io().to(body.room).emit(body.event, ...args);
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ ok: true, sockets: io().of("/").sockets.size }));
      });
      return;
    }
    if (req.url === "/healthz") {
      res.writeHead(200);
      res.end("ok");
      return;
    }
    if (!req.url.startsWith("/socket.io/")) {
      res.writeHead(404);
      res.end();
    }
  });
}

module.exports = { createEmitServer };
