// connect over iroh, relay-less, on loopback: nothing leaves the machine.

import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { describe, it } from 'node:test'

import alknet from '../alknet.js'
import { startServer, workdir } from './helpers.mjs'

function freeUdpPort () {
  return new Promise((resolve) => {
    const socket = createSocket('udp4')
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address()
      socket.close(() => resolve(port))
    })
  })
}

describe('iroh', { timeout: 120_000 }, () => {
  it('connects by endpoint id with irohRelay "none" and peerAddr', async () => {
    const dir = workdir()
    const udp = await freeUdpPort()
    const server = await startServer(dir, { listen: [`iroh://127.0.0.1:${udp}`], args: ['--iroh-relay', 'none'] })
    try {
      assert.ok(server.endpointId, server.child.output)
      const stream = await alknet.connect({
        transport: 'iroh',
        peer: server.endpointId,
        peerAddr: `127.0.0.1:${udp}`,
        irohRelay: 'none',
        identity: server.userKey,
        hostKey: server.fingerprint
      })
      const target = alknet.createAlknetEventTarget({ stream })
      const whoami = await target.call('/services/whoami')
      assert.match(whoami.id, /^SHA256:/)
      await target.close()
    } finally {
      await server.stop()
    }
  })
})
