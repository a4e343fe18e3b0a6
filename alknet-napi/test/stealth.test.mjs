// A stealth TLS listener that requires a knock, served and reached from
// Node: connect({ stealth: true }) tunnels, a plain connect is refused, and
// a visitor gets nginx's page.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'

import alknet from '../alknet.js'
import { keygen, run, workdir } from './helpers.mjs'

async function selfSigned (dir) {
  const cert = join(dir, 'cert.pem')
  const key = join(dir, 'key.pem')
  const made = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', key, '-out', cert])
  assert.equal(made.status, 0, made.stderr)
  return { cert, key }
}

describe('stealth', { timeout: 120_000 }, () => {
  it('opens only for a knocking client; visitors see nginx', async () => {
    const dir = workdir()
    const { cert, key } = await selfSigned(dir)
    const hostKey = keygen(dir, 'host')
    const userKey = keygen(dir, 'user')
    const server = await alknet.serve({
      listen: 'tls://127.0.0.1:0',
      hostKey,
      authorizedKeys: `${userKey}.pub`,
      tlsCert: cert,
      tlsKey: key,
      stealth: true,
      stealthRequireToken: true
    })
    try {
      const address = server.addresses[0].replace('tls://', '')
      const common = { server: address, transport: 'tls', insecure: true, identity: userKey, hostKey: server.hostKeyFingerprint }

      const stream = await alknet.connect({ ...common, stealth: true })
      const target = alknet.createAlknetEventTarget({ stream })
      assert.ok(Array.isArray(await target.call('/services/list')))
      await target.close()

      await assert.rejects(alknet.connect(common), (error) => error.message.includes('connect with --stealth'))

      const curl = await run('curl', ['--silent', '--insecure', '--max-time', '20', `https://${address}/`])
      assert.match(curl.stdout, /<center>nginx<\/center>/)
    } finally {
      await server.close()
    }
  })
})
