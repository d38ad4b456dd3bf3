// Preloaded into the conformance suite's Node process (NODE_OPTIONS=--import=…): requests to the
// gateway carry its API key, as a configured MCP client's do. The suite has no option for
// headers, and sends with fetch(), undici's request() and node:http; the first two go through
// Node's global dispatcher, which is wrapped here, and http.request is wrapped too.
// A request presenting another site's Origin is left without the key: a page of another site
// (DNS rebinding) cannot hold it.
import http from 'node:http';

const gateway = new URL(process.env.MESH_CONFORMANCE_URL);
const authorization = `Bearer ${process.env.MESH_CONFORMANCE_KEY}`;
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);

function header(headers, name) {
  if (headers == null) return undefined;
  const pairs = Array.isArray(headers)
    ? (Array.isArray(headers[0]) ? headers : headers.flatMap((v, i) => (i % 2 ? [] : [[v, headers[i + 1]]])))
    : typeof headers[Symbol.iterator] === 'function' ? [...headers] : Object.entries(headers);
  const found = pairs.find(([k]) => String(k).toLowerCase() === name);
  return found && String(found[1]);
}

function wantsKey(host, headers) {
  if (host !== gateway.host || header(headers, 'authorization') !== undefined) return false;
  const origin = header(headers, 'origin');
  return origin === undefined || LOOPBACK.has(new URL(origin).hostname);
}

function withKey(headers) {
  if (headers == null) return { authorization };
  if (Array.isArray(headers)) {
    return Array.isArray(headers[0]) ? [...headers, ['authorization', authorization]]
      : [...headers, 'authorization', authorization];
  }
  if (typeof headers[Symbol.iterator] === 'function') return [...headers, ['authorization', authorization]];
  return { ...headers, authorization };
}

await fetch('data:,'); // loads Node's fetch, which installs the global dispatcher
const GLOBAL = Symbol.for('undici.globalDispatcher.1');
if (typeof globalThis[GLOBAL]?.compose !== 'function') {
  throw new Error(`conformance_api_key.mjs: Node ${process.version} has no composable global dispatcher`);
}
globalThis[GLOBAL] = globalThis[GLOBAL].compose((dispatch) => (options, handler) =>
  dispatch(wantsKey(new URL(String(options.origin)).host, options.headers)
    ? { ...options, headers: withKey(options.headers) } : options, handler));

const request = http.request;
http.request = function (options, ...rest) {
  if (options && typeof options === 'object' && !(options instanceof URL)) {
    const host = `${options.hostname ?? options.host}${options.port ? `:${options.port}` : ''}`;
    if (wantsKey(host, options.headers)) options = { ...options, headers: withKey(options.headers) };
  }
  return request.call(this, options, ...rest);
};
