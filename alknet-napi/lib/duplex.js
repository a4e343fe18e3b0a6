'use strict'
// A native channel as a Node Duplex. Reading is pulled: the native read is
// started only when the stream's consumer wants more, so an unread stream
// stops taking data from the SSH channel (whose window then closes) and
// memory stays bounded. Each write waits for the channel to take it, so
// write() returns false while the SSH window is full.

const { Duplex } = require('node:stream')
const { fromNative } = require('./errors.js')

/** The largest read asked of the native side at once (its maximum). */
const READ_SIZE = 1024 * 1024

class ChannelDuplex extends Duplex {
  constructor (channel, options = {}) {
    super({ allowHalfOpen: true, highWaterMark: 64 * 1024, ...options })
    this._channel = channel
    this._reading = false
  }

  _read () {
    if (this._reading) return
    this._reading = true
    // Always a large read: the native side returns what has arrived (at
    // least one byte), and fewer round trips are what make it fast.
    this._channel.read(READ_SIZE).then(
      (chunk) => {
        this._reading = false
        this.push(chunk)
      },
      (error) => {
        this._reading = false
        this.destroy(fromNative(error))
      }
    )
  }

  _write (chunk, encoding, callback) {
    this._channel.write(chunk).then(() => callback(), (error) => callback(fromNative(error)))
  }

  _final (callback) {
    this._channel.shutdown().then(() => callback(), (error) => callback(fromNative(error)))
  }

  _destroy (error, callback) {
    this._channel.close().then(() => callback(error), () => callback(error))
  }
}

module.exports = { ChannelDuplex }
