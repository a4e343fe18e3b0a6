// Flow control for subscriptions between two event targets: a subscriber
// that stops reading stops its producer at the credit it granted (8 MiB),
// and then takes every item, in order.

import assert from 'node:assert/strict'
import { createConnection } from 'node:net'
import { describe, it } from 'node:test'

import alknet from '../alknet.js'
import { tcpServer } from './helpers.mjs'

async function connectedPair () {
  let accepted
  const gotSocket = new Promise((resolve) => { accepted = resolve })
  const server = await tcpServer((socket) => accepted(socket))
  const client = createConnection(server.address().port, '127.0.0.1')
  const far = await gotSocket
  server.close()
  return [client, far]
}

describe('credit', { timeout: 60_000 }, () => {
  it('a subscriber that does not read holds its producer at the credit it granted', async () => {
    const [near, far] = await connectedPair()
    const producer = alknet.createAlknetEventTarget({ stream: far })
    const subscriber = alknet.createAlknetEventTarget({ stream: near })
    const total = 20_000
    const padding = 'x'.repeat(1000)
    let produced = 0
    producer.serve('/count', { op_type: 'subscription' }, async function * () {
      for (let n = 0; n < total; n++) {
        produced++
        yield { n, padding }
      }
    })
    const items = subscriber.subscribe('/count')
    await new Promise((resolve) => setTimeout(resolve, 500))
    // ~1030 bytes a frame: 8 MiB of credit is about 8 150 items.
    assert.ok(produced < 8_300, `${produced} items produced while nobody read`)
    assert.ok(produced > 7_000, `only ${produced} items produced`)
    let next = 0
    for await (const item of items) {
      assert.equal(item.n, next)
      next++
    }
    assert.equal(next, total)
    await subscriber.close()
    await producer.close()
  })
})
