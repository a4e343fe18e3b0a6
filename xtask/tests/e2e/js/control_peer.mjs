// A plain Node (no npm) peer of alknet's call protocol, reached through
// `alknet connect --forward PORT:alknet-control:0`.
//
// `control_peer.mjs PORT` (spoke): checks the frames the server sends byte
// for byte, then registers as the spoke "jsnode" and serves /js/echo,
// /js/count and the endless /js/ticks until it is killed (or 120 s pass),
// printing "ticks aborted" when a /js/ticks subscription is aborted.
//
// `control_peer.mjs PORT subscriber`: subscribes to /jsnode/js/ticks through
// the hub, aborts after 5 items, and checks that the items stop.
import net from 'node:net';

const port = Number(process.argv[2]);
const mode = process.argv[3] ?? 'spoke';
const socket = net.connect(port, '127.0.0.1');
setTimeout(() => { console.log('timed out'); process.exit(2); }, 120_000).unref();

function encode(envelope) {
  // Key order type, id, payload: the same bytes as alknet's encoder.
  const json = Buffer.from(JSON.stringify({ type: envelope.type, id: envelope.id, payload: envelope.payload }), 'utf8');
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(json.length);
  return Buffer.concat([prefix, json]);
}

function fail(message) {
  console.log(`FAIL ${message}`);
  process.exit(1);
}

const waiting = new Map();
const streams = new Map();
const ticking = new Map();
let buffered = Buffer.alloc(0);
socket.on('data', (chunk) => {
  buffered = Buffer.concat([buffered, chunk]);
  while (buffered.length >= 4 && buffered.length >= 4 + buffered.readUInt32BE(0)) {
    const frame = buffered.subarray(0, 4 + buffered.readUInt32BE(0));
    buffered = buffered.subarray(frame.length);
    const envelope = JSON.parse(frame.subarray(4).toString('utf8'));
    // Byte for byte: re-encoding what we parsed gives the server's frame.
    if (!encode(envelope).equals(frame)) fail(`frame differs from its re-encoding: ${frame.toString('hex')}`);
    onEnvelope(envelope);
  }
});
socket.on('error', (error) => fail(`socket: ${error.message}`));
socket.on('close', () => { console.log('closed'); process.exit(0); });

function call(id, name, input) {
  return new Promise((resolve) => {
    waiting.set(id, resolve);
    socket.write(encode({ type: 'call.requested', id, payload: { name, input } }));
  });
}

function onEnvelope({ type, id, payload }) {
  if (type === 'call.requested') return serve(id, payload);
  if (type === 'call.aborted' && ticking.has(id)) {
    clearInterval(ticking.get(id));
    ticking.delete(id);
    console.log('ticks aborted');
    return;
  }
  if (streams.has(id)) return streams.get(id)({ type, payload });
  const resolve = waiting.get(id);
  if (!resolve) return;
  waiting.delete(id);
  resolve({ type, payload });
}

function send(type, id, payload) {
  socket.write(encode({ type, id, payload }));
}

function serve(id, { name, input }) {
  if (name === '/js/echo') return send('call.responded', id, { echoed: input, by: 'node' });
  if (name === '/js/count') {
    for (let n = 0; n < input.to; n += 1) send('call.responded', id, n);
    return send('call.completed', id, null);
  }
  if (name === '/js/ticks') {
    let n = 0;
    ticking.set(id, setInterval(() => send('call.responded', id, n++), 10));
    return;
  }
  send('call.error', id, { code: 'not_found', message: `no ${name} here`, retryable: false });
}

if (mode === 'subscriber') {
  let received = 0;
  let afterAbort = 0;
  let aborted = false;
  streams.set('sub-1', ({ type, payload }) => {
    if (type !== 'call.responded') fail(`unexpected ${type}: ${JSON.stringify(payload)}`);
    if (aborted) { afterAbort += 1; return; }
    if (payload !== received) fail(`item ${received} arrived as ${payload}`);
    received += 1;
    if (received === 5) {
      aborted = true;
      socket.write(encode({ type: 'call.aborted', id: 'sub-1', payload: null }));
    }
  });
  socket.write(encode({ type: 'call.requested', id: 'sub-1', payload: { name: '/jsnode/js/ticks', input: null } }));
  await new Promise((resolve) => setTimeout(resolve, 2000));
  // Items already in flight when the abort left may still arrive; a
  // stream that kept going would send ~200 in these 2 s.
  if (received !== 5 || afterAbort > 20) fail(`received ${received}, then ${afterAbort} after the abort`);
  console.log(`aborted after ${received} items (${afterAbort} stragglers)`);
  process.exit(0);
}

const list = await call('js-1', '/services/list', null);
if (list.type !== 'call.responded' || !list.payload.some((op) => op.name === '/services/list')) {
  fail(`unexpected /services/list answer: ${JSON.stringify(list)}`);
}
console.log('list ok');

const missing = await call('js-2', '/no/such', null);
if (missing.type !== 'call.error' || missing.payload.code !== 'not_found' || missing.payload.retryable !== false) {
  fail(`unexpected answer for /no/such: ${JSON.stringify(missing)}`);
}
console.log('not_found ok');

const registered = await call('js-3', '/hub/services/register', {
  spoke: 'jsnode',
  operations: [
    { name: '/js/echo', op_type: 'query', input_schema: { type: 'object' } },
    { name: '/js/count', op_type: 'subscription',
      input_schema: { type: 'object', properties: { to: { type: 'integer', minimum: 0 } }, required: ['to'] } },
    { name: '/js/ticks', op_type: 'subscription' },
  ],
});
if (registered.type !== 'call.responded' || registered.payload.registered !== 3) {
  fail(`registration failed: ${JSON.stringify(registered)}`);
}
console.log('registered');
