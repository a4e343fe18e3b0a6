// serve(): an alknet server in the Node process, reached by the real
// `alknet connect`, with SOCKS5 through it (curl) and onConnection.

import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { join } from 'node:path'
import { describe, it } from 'node:test'

import alknet from '../alknet.js'
import { keygen, run, startClient, tcpServer, workdir, alknet as runAlknet } from './helpers.mjs'

async function jsServer (dir, extra = {}) {
  const hostKey = keygen(dir, 'host')
  const userKey = keygen(dir, 'user')
  const server = await alknet.serve({
    listen: 'tcp://127.0.0.1:0',
    hostKey,
    authorizedKeys: `${userKey}.pub`,
    ...extra
  })
  const port = Number(server.addresses[0].split(':').pop())
  return { server, port, hostKey, userKey }
}

describe('serve', { timeout: 120_000 }, () => {
  it('tunnels for alknet connect (curl through SOCKS5) until onConnection takes channels', async () => {
    const dir = workdir()
    const { server, port, userKey } = await jsServer(dir)
    const web = await tcpServer((socket) => {
      socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'))
    })
    const client = await startClient(port, userKey, server.hostKeyFingerprint, ['-L', '127.0.0.1:0:echo:7'])
    try {
      const curl = await run('curl', ['--silent', '--fail', '--max-time', '30', '--socks5-hostname',
        `127.0.0.1:${client.socksPort}`, `http://127.0.0.1:${web.address().port}/`])
      assert.equal(curl.status, 0, curl.stderr)
      assert.equal(curl.stdout, 'hello')

      // From now on the JS handler answers echo:7 itself, with who asked.
      const seen = []
      server.onConnection((stream, info) => {
        seen.push(info)
        stream.pipe(stream)
      })
      const forward = Number(/local forward listening local=1 listen=127\.0\.0\.1:(\d+)/.exec(client.child.output)[1])
      const socket = createConnection(forward, '127.0.0.1')
      socket.end('ping')
      const echoed = await new Promise((resolve, reject) => {
        let text = ''
        socket.on('data', (chunk) => { text += chunk })
        socket.on('end', () => resolve(text))
        socket.on('error', reject)
      })
      assert.equal(echoed, 'ping')
      assert.equal(seen.length, 1)
      assert.deepEqual(seen[0].target, { host: 'echo', port: 7 })
      assert.equal(seen[0].transport, 'tcp')
      assert.match(seen[0].identity.id, /^SHA256:/)
      assert.match(seen[0].remoteAddress, /^127\.0\.0\.1:/)
    } finally {
      await client.stop()
      web.close()
      await server.close()
    }
  })

  it('reloadAuth removes a key: a new connect with it is AUTH_REJECTED; bad input changes nothing', async () => {
    const dir = workdir()
    const { server, port, userKey } = await jsServer(dir)
    const other = keygen(dir, 'other')
    const options = { server: `127.0.0.1:${port}`, identity: userKey, hostKey: server.hostKeyFingerprint }
    const first = await alknet.connect(options)
    first.destroy()
    await assert.rejects(server.reloadAuth({ authorizedKeys: Buffer.from('not a key\n') }), { code: 'INVALID_OPTION' })
    const still = await alknet.connect(options)
    still.destroy()
    await server.reloadAuth({ authorizedKeys: readFileSync(`${other}.pub`) })
    await assert.rejects(alknet.connect(options), { code: 'AUTH_REJECTED' })
    await server.close()
  })

  it('reloadForwarding applies to new sessions', async () => {
    const dir = workdir()
    const { server, port, userKey } = await jsServer(dir)
    const target = await tcpServer((socket) => socket.end('open'))
    const options = {
      server: `127.0.0.1:${port}`,
      identity: userKey,
      hostKey: server.hostKeyFingerprint,
      target: `127.0.0.1:${target.address().port}`
    }
    const allowed = await alknet.connect(options)
    allowed.destroy()
    await server.reloadForwarding({ default: 'deny' })
    await assert.rejects(alknet.connect(options), { code: 'CHANNEL_REFUSED' })
    await assert.rejects(server.reloadForwarding({ default: 'perhaps' }), { code: 'INVALID_OPTION' })
    target.close()
    await server.close()
  })

  it('reports what clients need and refuses bad options by name', async () => {
    const dir = workdir()
    const { server } = await jsServer(dir)
    assert.match(server.hostKeyFingerprint, /^SHA256:/)
    assert.equal(server.endpointId, null)
    await server.close()
    await assert.rejects(alknet.serve({ listen: 'tcp://127.0.0.1:0', hostKey: join(dir, 'host'), stealthy: true }),
      (error) => error.code === 'INVALID_OPTION' && error.message.includes('stealthy'))
    await assert.rejects(alknet.serve({ listen: 'tcp://127.0.0.1:0', hostKey: join(dir, 'host'), stealth: true, authorizedKeys: `${join(dir, 'user')}.pub` }),
      (error) => error.code === 'INVALID_OPTION' && error.message.includes('TLS'))
    const help = await runAlknet(['--version'])
    assert.equal(help.status, 0)
  })
})
