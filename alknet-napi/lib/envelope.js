'use strict'
// The call protocol's framing, byte for byte what alknet-call writes: a
// 4-byte big-endian length, then UTF-8 JSON {"type","id","payload"} in
// that key order, without whitespace, object keys inside the payload sorted
// (by their UTF-8 bytes, as serde_json's maps are). The Rust side's test
// vectors (alknet-call/tests/vectors.json) pin it.

const { AlknetError } = require('./errors.js')

/** The largest frame sent or accepted by default, as in alknet-call. */
const MAX_FRAME = 16 * 1024 * 1024

function compareUtf8 (a, b) {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'))
}

/** JSON with every object's keys sorted. */
function canonicalJson (value) {
  if (value === undefined) return 'null'
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (typeof value.toJSON === 'function') return canonicalJson(value.toJSON())
  const keys = Object.keys(value).filter((key) => value[key] !== undefined).sort(compareUtf8)
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(value[key])}`).join(',')}}`
}

/** One frame for `envelope`. */
function encodeEnvelope ({ type, id, payload }) {
  const json = Buffer.from(
    `{"type":${JSON.stringify(String(type))},"id":${JSON.stringify(String(id))},"payload":${canonicalJson(payload)}}`,
    'utf8'
  )
  if (json.length > MAX_FRAME) {
    throw new AlknetError('FRAME_TOO_LARGE', `an envelope of ${json.length} bytes is larger than ${MAX_FRAME}`)
  }
  const prefix = Buffer.alloc(4)
  prefix.writeUInt32BE(json.length)
  return Buffer.concat([prefix, json])
}

/** Cuts a byte stream into envelopes. */
class EnvelopeDecoder {
  constructor (maxFrame = MAX_FRAME) {
    this.maxFrame = maxFrame
    this.buffered = Buffer.alloc(0)
  }

  /** The envelopes complete after `chunk`; throws on a frame it cannot read. */
  push (chunk) {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk
    const envelopes = []
    while (this.buffered.length >= 4) {
      const length = this.buffered.readUInt32BE(0)
      if (length > this.maxFrame) {
        throw new AlknetError('FRAME_TOO_LARGE', `a frame of ${length} bytes is larger than ${this.maxFrame}`)
      }
      if (this.buffered.length < 4 + length) break
      const json = this.buffered.subarray(4, 4 + length).toString('utf8')
      this.buffered = this.buffered.subarray(4 + length)
      let envelope
      try {
        envelope = JSON.parse(json)
      } catch (error) {
        throw new AlknetError('BAD_FRAME', `a frame is not JSON: ${error.message}`)
      }
      if (envelope === null || typeof envelope !== 'object' || typeof envelope.type !== 'string' ||
          typeof envelope.id !== 'string' || !('payload' in envelope)) {
        throw new AlknetError('BAD_FRAME', 'a frame is not an envelope {"type","id","payload"}')
      }
      // What credit counts: the frame's JSON text, prefix excluded.
      Object.defineProperty(envelope, 'frameLength', { value: length, enumerable: false })
      envelopes.push(envelope)
    }
    return envelopes
  }
}

module.exports = { MAX_FRAME, canonicalJson, encodeEnvelope, EnvelopeDecoder }
