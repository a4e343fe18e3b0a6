// Bad input: each a rejection with its code, and a process that exits by
// itself afterwards (no handle left behind).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'

import alknet from '../alknet.js'
import { keygen, startServer, workdir } from './helpers.mjs'

const alknetJs = fileURLToPath(new URL('../alknet.js', import.meta.url))

function closedPort () {
  return new Promise((resolve) => {
    const probe = createServer()
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

describe('bad input', { timeout: 120_000 }, () => {
  it('a wrong key, a changed host key, an unreachable server, a typo: each its code', async () => {
    const dir = workdir()
    const server = await startServer(dir)
    const stranger = keygen(dir, 'stranger')
    const base = { server: `127.0.0.1:${server.port}`, identity: server.userKey, hostKey: server.fingerprint }
    try {
      await assert.rejects(alknet.connect({ ...base, identity: stranger }), { code: 'AUTH_REJECTED' })
      await assert.rejects(alknet.connect({ ...base, hostKey: 'SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU' }),
        { code: 'HOST_KEY_MISMATCH' })
      await assert.rejects(alknet.connect({ ...base, server: `127.0.0.1:${await closedPort()}` }), { code: 'UNREACHABLE' })
      await assert.rejects(alknet.connect({ ...base, hostkey: server.fingerprint }),
        (error) => error.code === 'INVALID_OPTION' && error.message.includes('"hostkey"'))
      await assert.rejects(alknet.connect({ ...base, identity: join(dir, 'missing') }), { code: 'INVALID_OPTION' })
      await assert.rejects(alknet.connect({ ...base, target: 'no-port' }), { code: 'INVALID_OPTION' })
      await assert.rejects(alknet.connect({ ...base, target: 'alknet-secret:1' }), { code: 'CHANNEL_REFUSED' })
      await assert.rejects(alknet.connect({ ...base, transport: 'carrier-pigeon' }), { code: 'INVALID_OPTION' })
    } finally {
      await server.stop()
    }
  })

  it('a process whose connect failed exits by itself', async () => {
    const dir = workdir()
    const key = keygen(dir, 'key')
    const script = join(dir, 'fails.cjs')
    writeFileSync(script, `
      const alknet = require(${JSON.stringify(alknetJs)})
      alknet.connect({ server: '127.0.0.1:${await closedPort()}', identity: ${JSON.stringify(key)} })
        .then(() => process.exit(3), (error) => console.log('rejected', error.code))
    `)
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000 })
    assert.equal(run.signal, null, 'it had to be killed: a handle kept node alive')
    assert.equal(run.status, 0, run.stderr)
    assert.match(run.stdout, /rejected UNREACHABLE/)
  })

  it('a closed server and a destroyed stream leave nothing running', async () => {
    const dir = workdir()
    const hostKey = keygen(dir, 'host')
    const user = keygen(dir, 'user')
    const script = join(dir, 'closes.cjs')
    writeFileSync(script, `
      const alknet = require(${JSON.stringify(alknetJs)})
      ;(async () => {
        const server = await alknet.serve({ listen: 'tcp://127.0.0.1:0', hostKey: ${JSON.stringify(hostKey)}, authorizedKeys: ${JSON.stringify(`${user}.pub`)} })
        server.onConnection((stream) => stream.pipe(stream))
        const port = server.addresses[0].split(':').pop()
        const stream = await alknet.connect({ server: '127.0.0.1:' + port, identity: ${JSON.stringify(user)}, hostKey: server.hostKeyFingerprint, target: 'echo:7' })
        stream.end('x')
        stream.on('data', () => {})
        await new Promise((resolve) => stream.on('end', resolve))
        stream.destroy()
        await server.close()
        console.log('closed')
      })()
    `)
    const run = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 30_000 })
    assert.equal(run.signal, null, 'it had to be killed: a handle kept node alive')
    assert.equal(run.status, 0, run.stderr)
    assert.match(run.stdout, /closed/)
  })
})
