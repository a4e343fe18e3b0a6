'use strict'
// Errors with a stable `code`. The native side can only carry a message,
// so it sends "[CODE] message"; this turns that into an Error whose
// `code` is CODE.

/**
 * An Error with a stable `code` (AUTH_REJECTED, HOST_KEY_MISMATCH,
 * UNREACHABLE, CHANNEL_REFUSED, TIMEOUT, INVALID_OPTION, CLOSED, …).
 */
class AlknetError extends Error {
  constructor (code, message, extra = {}) {
    super(message)
    this.name = 'AlknetError'
    this.code = code
    Object.assign(this, extra)
  }
}

const CODED = /^\[([A-Z_]+)\] ([\s\S]*)$/

/** The native error `error`, as an AlknetError when it carries a code. */
function fromNative (error) {
  if (error instanceof AlknetError) return error
  const match = CODED.exec(error?.message ?? '')
  if (!match) return error
  return new AlknetError(match[1], match[2])
}

/** Calls a native async function, converting its errors. */
async function native (promise) {
  try {
    return await promise
  } catch (error) {
    throw fromNative(error)
  }
}

module.exports = { AlknetError, fromNative, native }
