// Checks alknet-call's committed frame vectors with plain Node (no npm):
// JSON.stringify of each envelope, length-prefixed, must equal the bytes.
import { readFileSync } from 'node:fs';

const { vectors } = JSON.parse(readFileSync(process.argv[2], 'utf8'));
let failed = 0;
for (const { description, envelope, frame_hex } of vectors) {
  const json = Buffer.from(JSON.stringify({ type: envelope.type, id: envelope.id, payload: envelope.payload }), 'utf8');
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(json.length);
  const frame = Buffer.concat([prefix, json]).toString('hex');
  if (frame !== frame_hex) {
    failed += 1;
    console.log(`MISMATCH ${description}: ${frame}`);
  }
  // And decoding the bytes gives the envelope back.
  const bytes = Buffer.from(frame_hex, 'hex');
  const decoded = JSON.parse(bytes.subarray(4, 4 + bytes.readUInt32BE(0)).toString('utf8'));
  if (JSON.stringify(decoded) !== JSON.stringify(envelope)) {
    failed += 1;
    console.log(`DECODE MISMATCH ${description}`);
  }
}
console.log(`${vectors.length - failed}/${vectors.length} vectors ok`);
process.exit(failed === 0 ? 0 : 1);
