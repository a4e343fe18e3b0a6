// The event target's call protocol against Rust: a JS spoke called by
// `alknet call` through the hub, a JS subscriber aborting a Rust
// subscription, and byte-for-byte framing against alknet-call's vectors.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'

import alknet from '../alknet.js'
import { canonicalJson, encodeEnvelope, EnvelopeDecoder } from '../lib/envelope.js'
import { Child, alknet as runAlknet, keygen, startServer, tickerBin, workdir, workspace } from './helpers.mjs'

describe('calls', { timeout: 120_000 }, () => {
  it('encodes every alknet-call test vector to its exact bytes and back', () => {
    const file = JSON.parse(readFileSync(join(workspace, 'alknet-call', 'tests', 'vectors.json'), 'utf8'))
    assert.ok(file.vectors.length >= 6)
    for (const vector of file.vectors) {
      const frame = encodeEnvelope(vector.envelope)
      assert.equal(frame.toString('hex'), vector.frame_hex, vector.description)
      assert.deepEqual(new EnvelopeDecoder().push(frame), [vector.envelope], vector.description)
    }
    assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] }), '{"a":[{"c":3,"d":2}],"b":1}')
  })

  it('a JS spoke registered through the hub is called by alknet call', async () => {
    const dir = workdir()
    const server = await startServer(dir, { authorizedSuffix: 'resources=spoke:jsnode:register' })
    try {
      const stream = await alknet.connect({
        server: `127.0.0.1:${server.port}`,
        identity: server.userKey,
        hostKey: server.fingerprint
      })
      const spoke = alknet.createAlknetEventTarget({ stream })
      const spec = { name: '/js/echo', op_type: 'query', description: 'echoes, from JavaScript' }
      spoke.serve('/js/echo', spec, async (input) => ({ echoed: input, by: 'node' }))
      const hang = { name: '/js/hang', op_type: 'query', description: 'never answers' }
      spoke.serve('/js/hang', hang, () => new Promise(() => {}))
      const registered = await spoke.call('/hub/services/register', { spoke: 'jsnode', operations: [spec, hang] })
      assert.deepEqual(registered, { spoke: 'jsnode', registered: 2 })

      const called = await runAlknet(['call', '--server', `127.0.0.1:${server.port}`, '--identity', server.userKey,
        '--host-key', server.fingerprint, '/jsnode/js/echo', '{"x": 1}'])
      assert.equal(called.status, 0, called.stderr)
      assert.deepEqual(JSON.parse(called.stdout), { by: 'node', echoed: { x: 1 } })

      // A spoke that never answers: the caller's time limit reports the
      // `timeout` code, as every other failure reports its own.
      const hung = await runAlknet(['call', '--server', `127.0.0.1:${server.port}`, '--identity', server.userKey,
        '--host-key', server.fingerprint, '--timeout', '2', '/jsnode/js/hang'])
      assert.equal(hung.status, 1, hung.stderr)
      assert.match(hung.stderr, /call failed: timeout/)
      await spoke.close()
    } finally {
      await server.stop()
    }
  })

  it('a JS subscriber leaving the loop aborts a Rust subscription, and its handler sees it', async () => {
    const dir = workdir()
    const user = keygen(dir, 'user')
    const ticker = new Child(tickerBin, [`${user}.pub`])
    try {
      const [, port, fingerprint] = await ticker.waitFor(/listening (\d+) (SHA256:\S+)/)
      const stream = await alknet.connect({ server: `127.0.0.1:${port}`, identity: user, hostKey: fingerprint })
      const target = alknet.createAlknetEventTarget({ stream })
      const seen = []
      for await (const tick of target.subscribe('/demo/ticks')) {
        seen.push(tick)
        if (seen.length === 5) break
      }
      assert.deepEqual(seen, [0, 1, 2, 3, 4])
      await ticker.waitFor(/ticks aborted/)
      // The connection is still good after the abort.
      assert.ok(Array.isArray(await target.call('/services/list')))
      await target.close()
    } finally {
      ticker.process.stdin.end()
      await ticker.stop()
    }
  })

  it('a call that outlives its time limit fails with TIMEOUT and is aborted', async () => {
    const dir = workdir()
    const server = await startServer(dir, { authorizedSuffix: 'resources=spoke:slow:register' })
    try {
      const connect = () => alknet.connect({ server: `127.0.0.1:${server.port}`, identity: server.userKey, hostKey: server.fingerprint })
      const spokeSide = alknet.createAlknetEventTarget({ stream: await connect() })
      let aborted = false
      spokeSide.serve('/never/answers', { op_type: 'query' }, (input, { signal }) => new Promise(() => {
        signal.addEventListener('abort', () => { aborted = true })
      }))
      await spokeSide.call('/hub/services/register', { spoke: 'slow', operations: [{ name: '/never/answers', op_type: 'query' }] })
      const caller = alknet.createAlknetEventTarget({ stream: await connect() })
      await assert.rejects(caller.call('/slow/never/answers', null, { timeoutMs: 300 }), { code: 'TIMEOUT' })
      const deadline = Date.now() + 10_000
      while (!aborted && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
      assert.ok(aborted, 'the spoke never heard of the abort')
      await caller.close()
      await spokeSide.close()
    } finally {
      await server.stop()
    }
  })
})
