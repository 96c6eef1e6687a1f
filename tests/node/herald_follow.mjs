// Follows a client's streams with Herald's own JavaScript client (clients/js, herald-client):
// its user stream (tracked from `connected`) and one project, joined once and restored on
// every reconnect by the library. Prints one JSON line per delivered event or reset:
//   {"kind":"joined"} {"kind":"event","stream":...,"offset":...} {"kind":"reset","stream":...}
// Usage: node herald_follow.mjs URL TOKEN PROJECT_ID
import { createHerald } from '../../clients/js/src/index.js';

const [url, token, projectId] = process.argv.slice(2);
const say = (line) => process.stdout.write(JSON.stringify(line) + '\n');

const herald = await createHerald({
  url,
  getToken: async () => token,
  tabs: false,
  retry: { min: 100, max: 1000 },
  onReset: (stream, head) => say({ kind: 'reset', stream, head }),
});
const print = (_payload, meta) => say({ kind: 'event', stream: meta.stream, offset: meta.offset });
herald.onProjectUpdate(print);
herald.onNotification(print);
await herald.joinProject(Number(projectId));
say({ kind: 'joined' });
process.on('SIGTERM', async () => {
  await herald.close();
  process.exit(0);
});
