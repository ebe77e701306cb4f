// Preloaded into the Portkey gateway by tests/bench/run.py (`node --import <this file>`).
//
// Node's fetch ignores HTTP(S)_PROXY, so the trick that keeps LiteLLM offline (a proxy on a
// closed local port) does nothing here. Instead every outgoing TCP connection is checked
// before it is made: only loopback addresses (and "localhost") are allowed; any other host
// fails at once with ECONNREFUSED, before any DNS lookup, and is logged to stderr. A server
// that listens on a port without naming a host is bound to 127.0.0.1 (the gateway has no
// --host option and would otherwise listen on every interface).
import net from "node:net";

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost)$/i;

function target(args) {
  let first = args[0];
  if (Array.isArray(first)) first = first[0]; // net.connect() passes its normalized args
  if (first !== null && typeof first === "object") {
    if (first.path) return { local: true, host: first.path };
    return { host: first.host ?? "localhost" };
  }
  if (typeof first === "string" && !/^\d+$/.test(first)) return { local: true, host: first };
  return { host: typeof args[1] === "string" ? args[1] : "localhost" };
}

const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function guardedConnect(...args) {
  const { local, host } = target(args);
  const bare = String(host).replace(/^\[|\]$/g, "");
  if (!local && !LOOPBACK.test(bare)) {
    const err = Object.assign(new Error(`bench: connection to ${host} refused (loopback only)`), {
      code: "ECONNREFUSED",
    });
    process.stderr.write(`${err.message}\n`);
    process.nextTick(() => this.destroy(err));
    return this;
  }
  return connect.apply(this, args);
};

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function loopbackListen(...args) {
  const first = args[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (args[1] === undefined || args[1] === null) args[1] = "127.0.0.1";
    else if (typeof args[1] === "function") args.splice(1, 0, "127.0.0.1");
  } else if (first !== null && typeof first === "object" && "port" in first && !first.host) {
    args[0] = { ...first, host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
