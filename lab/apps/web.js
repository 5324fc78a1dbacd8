// The lab's Node.js backend: a plain http server (node stdlib only) behind the `web` site.
// Run by web.service; listens on process.env.HOST and process.env.PORT (from web.env).
'use strict';

const http = require('node:http');

const host = process.env.HOST || '127.0.0.1';
const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`web.js: PORT \`${process.env.PORT}\` is not a port number: set PORT in web.env`);
  process.exit(2);
}

const server = http.createServer((req, res) => {
  if (req.url === '/' || req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('web ok\n');
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  res.end('not found\n');
});

server.on('error', (err) => {
  console.error(`web.js: cannot listen on ${host}:${port}: ${err.message}`);
  process.exit(1);
});

server.listen(port, host, () => {
  console.log(`web.js: listening on http://${host}:${port}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
