// A plain Node (no npm) peer of alknet's call protocol, reached through
// `alknet connect --forward PORT:alknet-control:0`. It checks the frames the
// server sends byte for byte, then registers as the spoke "jsnode" and serves
// /js/echo and /js/count until it is killed (or 120 s pass).
import net from 'node:net';

const port = Number(process.argv[2]);
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
  send('call.error', id, { code: 'not_found', message: `no ${name} here`, retryable: false });
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
  ],
});
if (registered.type !== 'call.responded' || registered.payload.registered !== 2) {
  fail(`registration failed: ${JSON.stringify(registered)}`);
}
console.log('registered');
