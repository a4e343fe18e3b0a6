'use strict'
// A running server, as JavaScript sees it: onConnection takes admitted
// channels as Duplexes (until then they are tunnelled as by `alknet
// serve`), reloads, close.

const { ChannelDuplex } = require('./duplex.js')
const { native } = require('./errors.js')
const { invalid, policyInput, reloadAuthOptions } = require('./options.js')

function targetOf (target) {
  return target.path != null ? { path: target.path } : { host: target.host, port: target.port }
}

class AlknetServer {
  constructor (server) {
    this._native = server
    this._handler = null
    this._pulling = null
    this._closing = null
  }

  /** Where it listens: `tcp://127.0.0.1:4242`, `iroh://…`. */
  get addresses () {
    return this._native.addresses
  }

  /** The iroh endpoint id, when it listens on iroh (else null). */
  get endpointId () {
    return this._native.endpointId
  }

  /** The host key's SHA256 fingerprint, for clients to pin. */
  get hostKeyFingerprint () {
    return this._native.hostKeyFingerprint
  }

  /**
   * From now on, every admitted channel goes to `handler(stream, info)`
   * instead of being tunnelled: `stream` is a Duplex, `info` is
   * `{ identity: {id, scopes, resources}, target: {host, port} | {path},
   * remoteAddress, transport }`.
   */
  onConnection (handler) {
    if (typeof handler !== 'function') throw invalid('onConnection needs a function (stream, info) => …')
    this._handler = handler
    if (!this._pulling) {
      this._native.takeConnections()
      this._pulling = this._pull()
    }
    return this
  }

  async _pull () {
    for (;;) {
      let incoming
      try {
        incoming = await this._native.nextConnection()
      } catch {
        return
      }
      if (incoming === null) return
      const info = {
        identity: incoming.identity,
        target: targetOf(incoming.target),
        remoteAddress: incoming.remoteAddress,
        transport: incoming.transport
      }
      let channel
      try {
        channel = await incoming.accept()
      } catch {
        continue
      }
      const stream = new ChannelDuplex(channel)
      try {
        this._handler(stream, info)
      } catch (error) {
        stream.destroy(error)
      }
    }
  }

  /** Replaces who may log in (new sessions); bad input rejects and changes nothing. */
  reloadAuth (options) {
    return native(this._native.reloadAuth(reloadAuthOptions(options)))
  }

  /** Replaces the forwarding policy: a TOML path, a Buffer of TOML, or an object. */
  reloadForwarding (policy) {
    return native(Promise.resolve().then(() => this._native.reloadForwarding(policyInput(policy))))
  }

  /** Stops listening and ends every session; resolves once they are gone. */
  close () {
    if (!this._closing) {
      this._closing = (async () => {
        await native(this._native.close())
        await this._pulling
      })()
    }
    return this._closing
  }
}

module.exports = { AlknetServer }
