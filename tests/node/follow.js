// Follows one project as a portal would, with the official socket.io-client:
// automatic reconnection on, `auth` as a callback (a fresh payload on every attempt),
// the project joined again after every (re)connect. Prints one JSON line per thing:
//   {"kind":"connect"} {"kind":"disconnect","reason":...} {"kind":"joined","ack":...}
//   {"kind":"event","name":...,"args":[payload, meta]}
// Usage: node follow.js URL TOKEN PROJECT_ID
const { io } = require("socket.io-client");

const [url, token, projectId] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const socket = io(url, {
  transports: ["websocket"],
  reconnection: true,
  reconnectionDelay: 200,
  reconnectionDelayMax: 1000,
  auth: (cb) => cb({ token }),
});

socket.on("connect", () => {
  say({ kind: "connect" });
  socket.emit("join-project", Number(projectId), (ack) => say({ kind: "joined", ack }));
});
socket.on("disconnect", (reason) => say({ kind: "disconnect", reason }));
socket.on("connect_error", (err) => say({ kind: "connect_error", message: err.message }));
socket.onAny((name, ...args) => say({ kind: "event", name, args }));
process.on("SIGTERM", () => { socket.close(); process.exit(0); });
