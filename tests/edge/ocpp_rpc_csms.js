// A strict CSMS nobody here wrote: the npm package ocpp-rpc (pinned, installed under
// .cache/npm by deploy/dev/bootstrap.sh) in strict mode — every inbound call and every
// response to its own calls is validated against its OCPP 1.6 schemas — over TLS with HTTP
// Basic auth (security profile 2). Scripted by tests/edge/test_ocpp_rpc_csms.py over stdio:
//
//   argv: node ocpp_rpc_csms.js <npm prefix> <cert.pem> <key.pem> <password>
//   stdout, one JSON object a line: {"event": "listening", "port": N}; for each call the
//     charge point makes {"event": "call", "method", "params"}; {"event": "client"} per
//     connection; {"event": "strict", ...} on any strict-mode validation failure;
//     {"event": "bad", ...} on a malformed message; {"reply": id, "result"|"error"}.
//   stdin, one JSON object a line: {"id": n, "method": "RemoteStartTransaction", "params": {}}
//     calls the charge point.
"use strict";
const path = require("path");
const fs = require("fs");
const https = require("https");
const readline = require("readline");

const [prefix, certFile, keyFile, password] = process.argv.slice(2);
const { RPCServer, createRPCError } = require(path.join(prefix, "node_modules", "ocpp-rpc"));

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
let nextTransactionId = 2000;
let current = null;

const server = new RPCServer({ protocols: ["ocpp1.6"], strictMode: true, callTimeoutMs: 20000 });
server.auth((accept, reject, handshake) => {
  const given = handshake.password ? handshake.password.toString("utf8") : null;
  if (given !== password) {
    out({ event: "refused", identity: handshake.identity });
    reject(401, "bad credentials");
    return;
  }
  accept({}, "ocpp1.6");
});

server.on("client", (client) => {
  current = client;
  out({ event: "client", identity: client.identity, protocol: client.protocol });
  client.on("strictValidationFailure", (e) => {
    out({ event: "strict", method: e.method, outbound: e.outbound, isCall: e.isCall,
          error: String(e.error && e.error.message), params: e.params, result: e.result });
  });
  client.on("badMessage", (e) => {
    out({ event: "bad", error: String(e.error && e.error.message), message: e.buffer.toString() });
  });
  const answers = {
    BootNotification: () => ({ status: "Accepted", interval: 300, currentTime: new Date().toISOString() }),
    Heartbeat: () => ({ currentTime: new Date().toISOString() }),
    StatusNotification: () => ({}),
    Authorize: ({ params }) => ({ idTagInfo: { status: params.idTag.startsWith("OK") ? "Accepted" : "Blocked" } }),
    StartTransaction: () => ({ transactionId: ++nextTransactionId, idTagInfo: { status: "Accepted" } }),
    MeterValues: () => ({}),
    StopTransaction: () => ({ idTagInfo: { status: "Accepted" } }),
  };
  client.handle(({ method, params }) => {
    out({ event: "call", method, params });
    const answer = answers[method];
    if (!answer) throw createRPCError("NotImplemented");
    return answer({ params });
  });
});

const tls = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
tls.on("upgrade", server.handleUpgrade);
tls.listen(0, "127.0.0.1", () => out({ event: "listening", port: tls.address().port }));

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const { id, method, params } = JSON.parse(line);
  try {
    if (!current) throw new Error("no charge point connected");
    out({ reply: id, result: await current.call(method, params) });
  } catch (err) {
    out({ reply: id, error: String(err && err.message), code: err && err.rpcErrorCode });
  }
});
process.stdin.on("end", () => process.exit(0));
