// An independent implementation of alknet's token format, on Node's own
// crypto (no npm packages), to pin the format byte for byte.
//
//   node token.mjs verify <token> <ssh-ed25519 public key line> <now>
//       prints "ok" or the reason, exits 0 / 1
//   node token.mjs mint <now>
//       prints a fresh key's OpenSSH public key line, then a token for it
import { createHash, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function rawFromOpenSsh(line) {
  const blob = Buffer.from(line.trim().split(/\s+/)[1], 'base64');
  const typeLen = blob.readUInt32BE(0);
  if (blob.subarray(4, 4 + typeLen).toString() !== 'ssh-ed25519') throw new Error('not ssh-ed25519');
  const keyLen = blob.readUInt32BE(4 + typeLen);
  return blob.subarray(8 + typeLen, 8 + typeLen + keyLen);
}

function openSshFromRaw(raw) {
  const type = Buffer.from('ssh-ed25519');
  const len = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
  return 'ssh-ed25519 ' + Buffer.concat([len(type.length), type, len(raw.length), raw]).toString('base64');
}

const [command, ...args] = process.argv.slice(2);
if (command === 'verify') {
  const [token, publicLine, now] = args;
  const raw = rawFromOpenSsh(publicLine);
  const bytes = Buffer.from(token, 'base64url');
  if (bytes.length !== 104) { console.log(`wrong length ${bytes.length}`); process.exit(1); }
  const keyId = bytes.subarray(0, 32);
  const stamp = bytes.readBigUInt64BE(32);
  const signature = bytes.subarray(40);
  if (!keyId.equals(createHash('sha256').update(raw).digest())) { console.log('key id mismatch'); process.exit(1); }
  const skew = stamp > BigInt(now) ? stamp - BigInt(now) : BigInt(now) - stamp;
  if (skew > 300n) { console.log(`outside window by ${skew}`); process.exit(1); }
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(raw) }, format: 'jwk' });
  const ok = verify(null, bytes.subarray(0, 40), key, signature);
  console.log(ok ? 'ok' : 'bad signature');
  process.exit(ok ? 0 : 1);
} else if (command === 'mint') {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url');
  const stamp = Buffer.alloc(8);
  stamp.writeBigUInt64BE(BigInt(args[0]));
  const signed = Buffer.concat([createHash('sha256').update(raw).digest(), stamp]);
  const signature = sign(null, signed, privateKey);
  console.log(openSshFromRaw(raw));
  console.log(b64url(Buffer.concat([signed, signature])));
} else {
  console.error('usage: token.mjs verify <token> <public key> <now> | mint <now>');
  process.exit(2);
}
