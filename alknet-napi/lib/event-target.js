'use strict'
// An EventTarget over a byte stream that speaks alknet's envelope framing,
// as the pubsub adapters behave, plus alknet's call protocol on the same
// stream (calls, subscriptions, serving operations), byte-compatible with
// alknet-call.
//
// Events: dispatchEvent(new CustomEvent(type, { detail })) sends an
// envelope {type, id, payload: detail}; incoming envelopes of other types
// than the call protocol's are dispatched to listeners of their type. The
// first listener of a type sends {"type":"__subscribe","id":…,"payload":
// {"type":TYPE}}, removing the last sends "__unsubscribe", so a pubsub hub
// on the far side can route topics; alknet's control channel ignores them.

const { AlknetError } = require('./errors.js')
const { encodeEnvelope, EnvelopeDecoder, MAX_FRAME } = require('./envelope.js')

const REQUESTED = 'call.requested'
const RESPONDED = 'call.responded'
const COMPLETED = 'call.completed'
const ABORTED = 'call.aborted'
const ERROR = 'call.error'
const CREDIT = 'call.credit'
/**
 * Bytes of items a subscription lets its producer send ahead of what the
 * loop has taken (alknet-call's `credit`: granted in the request, granted
 * again as items are taken). A producer without credit ignores it.
 */
const CREDIT_WINDOW = 8 * 1024 * 1024
const CALL_TYPES = new Set([REQUESTED, RESPONDED, COMPLETED, ABORTED, ERROR])
const KNOWN_CODES = new Set(['not_found', 'forbidden', 'invalid_input', 'timeout', 'internal', 'unavailable'])

function randomPrefix () {
  return Math.floor(Math.random() * 0x100000000).toString(16).padStart(8, '0') + '-'
}

/** The Error a call.error payload stands for. */
function remoteError (payload) {
  const code = typeof payload?.code === 'string' ? payload.code : 'internal'
  return new AlknetError(code.toUpperCase(), payload?.message ?? code, {
    retryable: Boolean(payload?.retryable),
    remoteCode: code
  })
}

/** A subscription's items, as an async iterator that aborts when left. */
class SubscriptionIterator {
  constructor (onLeave, onTaken = () => {}) {
    this.items = []
    this.waiting = null
    this.done = false
    this.failure = null
    this.onLeave = onLeave
    this.onTaken = onTaken
  }

  push (item, length = 0) {
    if (this.done) return
    if (this.waiting) {
      const { resolve } = this.waiting
      this.waiting = null
      this.onTaken(length)
      resolve({ value: item, done: false })
    } else {
      this.items.push({ item, length })
    }
  }

  finish (failure = null) {
    if (this.done) return
    this.done = true
    this.failure = failure
    if (this.waiting) {
      const { resolve, reject } = this.waiting
      this.waiting = null
      if (failure) reject(failure)
      else resolve({ value: undefined, done: true })
    }
  }

  next () {
    if (this.items.length) {
      const { item, length } = this.items.shift()
      this.onTaken(length)
      return Promise.resolve({ value: item, done: false })
    }
    if (this.done) {
      if (this.failure) {
        const failure = this.failure
        this.failure = null
        return Promise.reject(failure)
      }
      return Promise.resolve({ value: undefined, done: true })
    }
    return new Promise((resolve, reject) => { this.waiting = { resolve, reject } })
  }

  return () {
    if (!this.done) {
      this.finish()
      this.onLeave()
    }
    return Promise.resolve({ value: undefined, done: true })
  }

  [Symbol.asyncIterator] () {
    return this
  }
}

class AlknetEventTarget extends EventTarget {
  constructor ({ stream, maxFrame = MAX_FRAME, callTimeoutMs = 30000 }) {
    super()
    if (!stream || typeof stream.write !== 'function' || typeof stream.on !== 'function') {
      throw new AlknetError('INVALID_OPTION', 'createAlknetEventTarget needs { stream }: a Duplex')
    }
    this._stream = stream
    this._decoder = new EnvelopeDecoder(maxFrame)
    this._callTimeoutMs = callTimeoutMs
    this._prefix = randomPrefix()
    this._nextId = 1
    this._calls = new Map()
    this._subscriptions = new Map()
    this._operations = new Map()
    this._serving = new Map()
    this._credits = new Map()
    this._listenerCounts = new Map()
    this._closed = false
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve })
    stream.on('data', (chunk) => this._receive(chunk))
    stream.on('end', () => this._shutDown(new AlknetError('CLOSED', 'the stream ended')))
    stream.on('close', () => this._shutDown(new AlknetError('CLOSED', 'the stream closed')))
    stream.on('error', (error) => this._shutDown(new AlknetError('CLOSED', `the stream failed: ${error.message}`)))
  }

  _id () {
    return `${this._prefix}${this._nextId++}`
  }

  _send (type, id, payload) {
    if (this._closed) throw new AlknetError('CLOSED', 'the event target is closed')
    return this._stream.write(encodeEnvelope({ type, id, payload }))
  }

  /** Resolves once the stream can take more (write backpressure). */
  _drained () {
    if (!this._stream.writableNeedDrain) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => { this._stream.off('drain', done); this._stream.off('close', done); resolve() }
      this._stream.on('drain', done)
      this._stream.on('close', done)
    })
  }

  // ----- events -----

  /** Sends `event` as an envelope (its `detail` is the payload). */
  dispatchEvent (event) {
    this._send(event.type, this._id(), event.detail ?? null)
    return true
  }

  addEventListener (type, listener, options) {
    super.addEventListener(type, listener, options)
    if (!listener) return
    const count = (this._listenerCounts.get(type) ?? 0) + 1
    this._listenerCounts.set(type, count)
    if (count === 1 && !CALL_TYPES.has(type) && !this._closed) {
      this._send('__subscribe', this._id(), { type })
    }
  }

  removeEventListener (type, listener, options) {
    super.removeEventListener(type, listener, options)
    const count = this._listenerCounts.get(type) ?? 0
    if (!listener || count === 0) return
    if (count === 1) {
      this._listenerCounts.delete(type)
      if (!CALL_TYPES.has(type) && !this._closed) this._send('__unsubscribe', this._id(), { type })
    } else {
      this._listenerCounts.set(type, count - 1)
    }
  }

  // ----- calls -----

  /** Calls `name` with `input`; resolves with the answer. */
  call (name, input = null, { timeoutMs = this._callTimeoutMs } = {}) {
    return new Promise((resolve, reject) => {
      const id = this._id()
      const timer = timeoutMs > 0
        ? setTimeout(() => {
          this._calls.delete(id)
          if (!this._closed) this._send(ABORTED, id, null)
          reject(new AlknetError('TIMEOUT', `${name} did not answer within ${timeoutMs} ms`))
        }, timeoutMs)
        : null
      timer?.unref?.()
      this._calls.set(id, { resolve, reject, timer })
      try {
        this._send(REQUESTED, id, { name, input })
      } catch (error) {
        clearTimeout(timer)
        this._calls.delete(id)
        reject(error)
      }
    })
  }

  /** Subscribes to `name`: an async iterator of its items; leaving the loop aborts it. */
  subscribe (name, input = null) {
    const id = this._id()
    let taken = 0
    const iterator = new SubscriptionIterator(() => {
      this._subscriptions.delete(id)
      if (!this._closed) this._send(ABORTED, id, null)
    }, (length) => {
      // Taken by the loop: the producer may send as much again.
      taken += length
      if (taken >= CREDIT_WINDOW / 2 && !this._closed && this._subscriptions.has(id)) {
        this._send(CREDIT, id, { bytes: taken })
        taken = 0
      }
    })
    this._subscriptions.set(id, iterator)
    this._send(REQUESTED, id, { name, input, credit: CREDIT_WINDOW })
    return iterator
  }

  /**
   * Answers calls to `name`. `handler(input, { signal })` returns the
   * answer (or a promise of it); for a spec with `op_type: "subscription"`
   * it returns an async iterable of items. A thrown error with a `code`
   * (`not_found`, `forbidden`, `invalid_input`, …) is sent as that code.
   */
  serve (name, spec, handler) {
    if (typeof handler !== 'function') throw new AlknetError('INVALID_OPTION', 'serve needs a handler function')
    this._operations.set(name, { spec: { name, op_type: 'query', ...spec }, handler })
  }

  async _answer (id, { name, input, credit }) {
    const operation = this._operations.get(name)
    if (!operation) {
      this._send(ERROR, id, { code: 'not_found', message: `no operation named ${name}`, retryable: false })
      return
    }
    const abort = new AbortController()
    this._serving.set(id, abort)
    // The caller's credit, if it grants any: bytes of items still allowed.
    const granted = Number.isSafeInteger(credit) && credit > 0
      ? { available: credit, wake: null }
      : null
    if (granted) this._credits.set(id, granted)
    try {
      const result = await operation.handler(input ?? null, { signal: abort.signal })
      if (abort.signal.aborted) return
      if (operation.spec.op_type === 'subscription') {
        for await (const item of result) {
          if (granted) await this._credit(granted, abort.signal)
          if (abort.signal.aborted || this._closed) break
          const frame = encodeEnvelope({ type: RESPONDED, id, payload: item })
          if (granted) granted.available -= frame.length - 4
          if (!this._stream.write(frame)) await this._drained()
        }
        if (!abort.signal.aborted && !this._closed) this._send(COMPLETED, id, null)
      } else {
        this._send(RESPONDED, id, result ?? null)
      }
    } catch (error) {
      if (abort.signal.aborted || this._closed) return
      const code = typeof error?.code === 'string' && KNOWN_CODES.has(error.code.toLowerCase())
        ? error.code.toLowerCase()
        : 'internal'
      this._send(ERROR, id, { code, message: String(error?.message ?? error), retryable: false })
    } finally {
      this._serving.delete(id)
      this._credits.delete(id)
    }
  }

  /** Resolves once `granted` has credit left, or the call ends. */
  _credit (granted, signal) {
    if (granted.available > 0 || signal.aborted || this._closed) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => { signal.removeEventListener('abort', done); granted.wake = null; resolve() }
      granted.wake = done
      signal.addEventListener('abort', done)
    })
  }

  // ----- incoming -----

  _receive (chunk) {
    let envelopes
    try {
      envelopes = this._decoder.push(chunk)
    } catch (error) {
      // The stream is no longer framed: nothing after this can be read.
      this._shutDown(error)
      this._stream.destroy()
      return
    }
    for (const envelope of envelopes) this._route(envelope)
  }

  _route (envelope) {
    const { type, id, payload } = envelope
    switch (type) {
      case REQUESTED:
        if (payload === null || typeof payload !== 'object' || typeof payload.name !== 'string') {
          this._send(ERROR, id, { code: 'invalid_input', message: 'call.requested payload needs a string "name"', retryable: false })
          return
        }
        this._answer(id, payload)
        return
      case RESPONDED: {
        const call = this._calls.get(id)
        if (call) {
          this._calls.delete(id)
          clearTimeout(call.timer)
          call.resolve(payload)
          return
        }
        this._subscriptions.get(id)?.push(payload, envelope.frameLength ?? 0)
        return
      }
      case CREDIT: {
        const granted = this._credits.get(id)
        if (granted && Number.isSafeInteger(payload?.bytes) && payload.bytes > 0) {
          granted.available += payload.bytes
          granted.wake?.()
        }
        return
      }
      case COMPLETED: {
        const subscription = this._subscriptions.get(id)
        if (subscription) {
          this._subscriptions.delete(id)
          subscription.finish()
        }
        this._fail(id, new AlknetError('NO_RESPONSE', 'the call completed without an answer'))
        return
      }
      case ERROR:
        this._fail(id, remoteError(payload))
        return
      case ABORTED: {
        const serving = this._serving.get(id)
        if (serving) serving.abort()
        const reason = typeof payload === 'string' ? payload : payload?.reason
        this._fail(id, new AlknetError('ABORTED', reason ? `aborted: ${reason}` : 'aborted'))
        return
      }
      default:
        // Pubsub control envelopes are for a hub, not for listeners.
        if (type === '__subscribe' || type === '__unsubscribe') return
        EventTarget.prototype.dispatchEvent.call(this, new CustomEvent(type, { detail: payload }))
    }
  }

  _fail (id, failure) {
    const call = this._calls.get(id)
    if (call) {
      this._calls.delete(id)
      clearTimeout(call.timer)
      call.reject(failure)
      return
    }
    const subscription = this._subscriptions.get(id)
    if (subscription) {
      this._subscriptions.delete(id)
      subscription.finish(failure)
    }
  }

  _shutDown (failure) {
    if (this._closed) return
    this._closed = true
    for (const [, call] of this._calls) {
      clearTimeout(call.timer)
      call.reject(failure)
    }
    this._calls.clear()
    for (const [, subscription] of this._subscriptions) subscription.finish(failure)
    this._subscriptions.clear()
    for (const [, abort] of this._serving) abort.abort()
    this._serving.clear()
    for (const [, granted] of this._credits) granted.wake?.()
    this._credits.clear()
    this._resolveClosed()
  }

  /** Closes the stream; pending calls fail with CLOSED. */
  close () {
    this._shutDown(new AlknetError('CLOSED', 'the event target was closed'))
    this._stream.destroy()
    return this.closed
  }
}

function createAlknetEventTarget (options) {
  return new AlknetEventTarget(options ?? {})
}

module.exports = { AlknetEventTarget, createAlknetEventTarget }
