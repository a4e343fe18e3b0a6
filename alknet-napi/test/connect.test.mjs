// connect(): one channel as a Duplex, to a real `alknet serve`.

import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'

import alknet from '../alknet.js'
import { LIMIT_MS, keygen, startServer, tcpServer, workdir } from './helpers.mjs'

describe('connect', { timeout: 240_000 }, () => {
  let dir, server
  before(async () => {
    dir = workdir()
    server = await startServer(dir)
  })
  after(async () => { await server?.stop() })

  const options = (extra = {}) => ({
    server: `127.0.0.1:${server.port}`,
    identity: server.userKey,
    hostKey: server.fingerprint,
    user: 'tester',
    ...extra
  })

  it('remembers the host key in knownHosts and refuses a changed one', async () => {
    const knownHosts = join(dir, 'known_hosts')
    const base = { server: `127.0.0.1:${server.port}`, identity: server.userKey, user: 'tester', knownHosts }
    const first = await alknet.connect(base)
    first.destroy()
    const recorded = readFileSync(knownHosts, 'utf8')
    assert.match(recorded, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${server.port} ssh-ed25519 `))
    const again = await alknet.connect({ ...base, strictHostKeys: true })
    again.destroy()
    // Another key recorded for this address: the connection is refused.
    const other = keygen(dir, 'other_host')
    writeFileSync(knownHosts, `[127.0.0.1]:${server.port} ${readFileSync(`${other}.pub`, 'utf8')}`)
    await assert.rejects(alknet.connect(base), /REMOTE HOST IDENTIFICATION HAS CHANGED/)
  })

  it('tries each way in listed in `server` until one connects', async () => {
    // A port nobody listens on first, then the server.
    const closed = await tcpServer(() => {})
    const closedPort = closed.address().port
    await new Promise((resolve) => closed.close(resolve))
    const stream = await alknet.connect(options({
      server: [`tcp://127.0.0.1:${closedPort}`, `tcp://127.0.0.1:${server.port}`]
    }))
    const target = alknet.createAlknetEventTarget({ stream })
    assert.ok(Array.isArray(await target.call('/services/list')))
    await target.close()
  })

  it('calls /services/list through the event target on the control channel', async () => {
    const stream = await alknet.connect(options())
    const target = alknet.createAlknetEventTarget({ stream })
    // A pubsub listener sends __subscribe, which the server ignores.
    target.addEventListener('news', () => {})
    const list = await target.call('/services/list')
    const names = list.map((op) => op.name)
    assert.ok(names.includes('/services/whoami'), names.join(' '))
    const whoami = await target.call('/services/whoami')
    assert.match(whoami.id, /^SHA256:/)
    await assert.rejects(target.call('/no/such'), { code: 'NOT_FOUND' })
    await target.close()
  })

  it('carries 256 MiB both ways, byte for byte', async () => {
    const echo = await tcpServer((socket) => socket.pipe(socket))
    const stream = await alknet.connect(options({ target: `127.0.0.1:${echo.address().port}` }))
    const size = 256 * 1024 * 1024
    const sent = createHash('sha256')
    const received = createHash('sha256')
    let receivedBytes = 0
    const reading = new Promise((resolve, reject) => {
      stream.on('data', (chunk) => { received.update(chunk); receivedBytes += chunk.length })
      stream.on('end', resolve)
      stream.on('error', reject)
    })
    const block = Buffer.alloc(1024 * 1024)
    for (let offset = 0; offset < size; offset += block.length) {
      block.fill(offset % 251)
      block.writeUInt32BE(offset, 0)
      sent.update(block)
      if (!stream.write(block)) await new Promise((resolve) => stream.once('drain', resolve))
    }
    stream.end()
    await reading
    assert.equal(receivedBytes, size)
    assert.equal(received.digest('hex'), sent.digest('hex'))
    stream.destroy()
    echo.close()
  })

  it('keeps memory bounded while an unread stream has 1 GiB waiting', async () => {
    // The sender is another process, writing as fast as the tunnel takes it.
    const writer = spawn(process.execPath, ['-e', `
      const net = require('node:net')
      const block = Buffer.alloc(1024 * 1024, 7)
      const server = net.createServer((socket) => {
        let left = 1024
        const pump = () => { while (left > 0) { left--; if (!socket.write(block)) { socket.once('drain', pump); return } } socket.end() }
        pump()
      })
      server.listen(0, '127.0.0.1', () => console.log('port', server.address().port))
    `], { stdio: ['ignore', 'pipe', 'inherit'] })
    const port = await new Promise((resolve) => writer.stdout.once('data', (line) => resolve(Number(String(line).split(' ')[1]))))
    try {
      const stream = await alknet.connect(options({ target: `127.0.0.1:${port}` }))
      stream.pause()
      global.gc?.()
      const before = process.memoryUsage().rss
      // Let the server push what it can.
      await new Promise((resolve) => setTimeout(resolve, 3000))
      const grown = process.memoryUsage().rss - before
      assert.ok(grown < 64 * 1024 * 1024, `RSS grew by ${grown} bytes with nothing read`)
      // And everything still arrives once read.
      let total = 0
      stream.on('data', (chunk) => { total += chunk.length })
      stream.resume()
      await new Promise((resolve, reject) => { stream.on('end', resolve); stream.on('error', reject) })
      assert.equal(total, 1024 * 1024 * 1024)
      stream.destroy()
    } finally {
      writer.kill()
    }
  })

  it('end() sends EOF and the other direction keeps flowing', async () => {
    // The target answers only after our EOF.
    const target = await tcpServer((socket) => {
      const chunks = []
      socket.on('data', (chunk) => chunks.push(chunk))
      socket.on('end', () => socket.end(Buffer.concat(chunks).toString().toUpperCase()))
    })
    const stream = await alknet.connect(options({ target: `127.0.0.1:${target.address().port}` }))
    stream.end('half closed')
    const answer = await new Promise((resolve, reject) => {
      let text = ''
      stream.on('data', (chunk) => { text += chunk })
      stream.on('end', () => resolve(text))
      stream.on('error', reject)
    })
    assert.equal(answer, 'HALF CLOSED')
    stream.destroy()
    target.close()
  })
}, { timeout: LIMIT_MS * 8 })
