#!/usr/bin/env node
// Echo WebSocket peer (Node `ws`) for zenws interop tests.
//
// Usage: node ws_peer.js --port 0 [--tls-cert CERT.pem --tls-key KEY.pem]
//
// Contract (identical for tests/peers/python/ws_peer.py):
//  * binds 127.0.0.1:<port> (0 = ephemeral), prints exactly one line
//    "LISTENING <port>" to stdout; nothing else goes to stdout (diagnostics
//    go to stderr);
//  * exits (status 0) when stdin reaches EOF or on SIGTERM/SIGINT, closing open
//    connections with 1001 -- spawn it with a piped stdin and drop that pipe;
//  * echoes text as text and binary as binary, verbatim, up to 20 MiB;
//  * text "__close:CODE"   -> closes with CODE, reason "requested";
//  * text "__ping:PAYLOAD" -> sends a ping with PAYLOAD (UTF-8), waits for the
//    pong (10 s) and then sends text "pinged" (or "pong-timeout");
//  * text "__headers"      -> sends a JSON object of the request headers
//    (lowercased names; repeated headers joined with ", ");
//  * no permessage-deflate, no server keepalive pings.
// Messages on one connection are handled strictly in order.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const MAX_SIZE = 20 * 1024 * 1024;
const PONG_TIMEOUT_MS = 10000;

function usage(msg) {
  process.stderr.write(`ws_peer.js: ${msg}\nusage: node ws_peer.js --port 0 [--tls-cert CERT.pem --tls-key KEY.pem]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { port: 0, tlsCert: null, tlsKey: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--port') args.port = Number(next());
    else if (a === '--tls-cert') args.tlsCert = next();
    else if (a === '--tls-key') args.tlsKey = next();
    else if (a.startsWith('--port=')) args.port = Number(a.slice(7));
    else if (a.startsWith('--tls-cert=')) args.tlsCert = a.slice(11);
    else if (a.startsWith('--tls-key=')) args.tlsKey = a.slice(10);
    else usage(`unknown argument ${a}`);
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) usage('bad --port');
  if (!!args.tlsCert !== !!args.tlsKey) usage('--tls-cert and --tls-key go together');
  return args;
}

function requestHeaders(req) {
  const out = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i].toLowerCase();
    out[key] = Object.prototype.hasOwnProperty.call(out, key) ? `${out[key]}, ${raw[i + 1]}` : raw[i + 1];
  }
  return out;
}

function validCloseCode(code) {
  return [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].includes(code)
    || (code >= 3000 && code <= 4999);
}

function sendAsync(ws, data, opts) {
  return new Promise((resolve) => ws.send(data, opts, () => resolve()));
}

function waitPong(ws, payload) {
  return new Promise((resolve) => {
    const done = (ok) => {
      clearTimeout(timer);
      ws.off('pong', onPong);
      ws.off('close', onClose);
      resolve(ok);
    };
    const onPong = (data) => { if (Buffer.compare(data, payload) === 0) done(true); };
    const onClose = () => done(false);
    const timer = setTimeout(() => done(false), PONG_TIMEOUT_MS);
    ws.on('pong', onPong);
    ws.on('close', onClose);
  });
}

// returns true when the connection is finished (closed on request)
async function handle(ws, req, data, isBinary) {
  if (ws.readyState !== ws.OPEN) return true;
  if (!isBinary && data.length >= 2 && data[0] === 0x5f && data[1] === 0x5f) { // "__"
    const text = data.toString('utf8');
    if (text.startsWith('__close:')) {
      const s = text.slice('__close:'.length);
      const code = /^[0-9]+$/.test(s) ? Number(s) : NaN;
      if (validCloseCode(code)) {
        ws.close(code, 'requested');
        return true;
      }
    } else if (text.startsWith('__ping:')) {
      const payload = Buffer.from(text.slice('__ping:'.length), 'utf8');
      const pong = waitPong(ws, payload);
      ws.ping(payload);
      const ok = await pong;
      if (ws.readyState === ws.OPEN) await sendAsync(ws, ok ? 'pinged' : 'pong-timeout', { binary: false });
      return false;
    } else if (text === '__headers') {
      await sendAsync(ws, JSON.stringify(requestHeaders(req)), { binary: false });
      return false;
    }
  }
  // verbatim: the received bytes go back in a frame of the same type
  ws.send(data, { binary: isBinary });
  return false;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const server = args.tlsCert
    ? https.createServer({ cert: fs.readFileSync(args.tlsCert), key: fs.readFileSync(args.tlsKey) })
    : http.createServer();
  server.on('request', (_req, res) => { res.writeHead(426); res.end('WebSocket only\n'); });
  server.on('tlsClientError', (err) => process.stderr.write(`ws_peer.js: tls: ${err.message}\n`));

  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: MAX_SIZE });
  wss.on('connection', (ws, req) => {
    let chain = Promise.resolve(false);
    ws.on('error', (err) => process.stderr.write(`ws_peer.js: connection: ${err.message}\n`));
    ws.on('message', (data, isBinary) => {
      chain = chain.then((finished) => (finished ? true : handle(ws, req, data, isBinary)))
        .catch((err) => { process.stderr.write(`ws_peer.js: ${err.stack || err}\n`); return false; });
    });
  });

  let stopping = false;
  const stop = (why) => {
    if (stopping) return;
    stopping = true;
    for (const ws of wss.clients) ws.close(1001, 'going away');
    server.close();
    const deadline = Date.now() + 3000;
    const tick = setInterval(() => {
      if (wss.clients.size === 0 || Date.now() > deadline) {
        clearInterval(tick);
        process.exit(0);
      }
    }, 20);
    void why;
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('close', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.on('data', () => {});
  process.stdin.resume();

  server.on('error', (err) => { process.stderr.write(`ws_peer.js: listen: ${err.message}\n`); process.exit(1); });
  server.listen(args.port, '127.0.0.1', () => {
    process.stdout.write(`LISTENING ${server.address().port}\n`);
  });
}

main();
