'use strict'
// Option checking that belongs in JavaScript: unknown names (a typo must
// not be silently ignored), single values where the native side wants a
// list, and the forwarding policy's three forms.

const { AlknetError } = require('./errors.js')

const CONNECT_OPTIONS = [
  'server', 'transport', 'identity', 'passphrase', 'certificate', 'user', 'hostKey', 'knownHosts',
  'strictHostKeys',
  'tlsServerName', 'tlsCa', 'insecure', 'stealth', 'peer', 'peerAddr', 'irohRelay', 'proxy',
  'keepaliveInterval', 'target'
]

const SERVE_OPTIONS = [
  'listen', 'hostKey', 'passphrase', 'authorizedKeys', 'certAuthority', 'forwardPolicy',
  'tlsCert', 'tlsKey', 'stealth', 'stealthBackend', 'stealthRequireToken', 'maxConnectionsPerIp', 'maxAuthAttempts', 'irohRelay'
]

const RELOAD_AUTH_OPTIONS = ['authorizedKeys', 'certAuthority']

function invalid (message) {
  return new AlknetError('INVALID_OPTION', message)
}

/** Refuses names not in `known`, naming the first such one. */
function checkNames (what, options, known) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalid(`${what} needs an options object`)
  }
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw invalid(`${what}: unknown option ${JSON.stringify(name)} (known: ${known.join(', ')})`)
    }
  }
}

function list (value) {
  if (value === undefined || value === null) return undefined
  return Array.isArray(value) ? value : [value]
}

/** A policy as the native side takes it: `{path}`, `{toml}` or `{json}`. */
function policyInput (policy) {
  if (typeof policy === 'string') return { path: policy }
  if (Buffer.isBuffer(policy)) return { toml: policy }
  if (policy !== null && typeof policy === 'object') return { json: JSON.stringify(policy) }
  throw invalid('forwardPolicy: give a TOML file\'s path, a Buffer of TOML, or an object')
}

function connectOptions (options) {
  checkNames('connect', options, CONNECT_OPTIONS)
  if (options.identity === undefined) throw invalid('connect: identity is required (a key file path or a Buffer)')
  return {
    ...options,
    server: list(options.server),
    tlsCa: list(options.tlsCa),
    peerAddr: list(options.peerAddr)
  }
}

function serveOptions (options) {
  checkNames('serve', options, SERVE_OPTIONS)
  if (options.hostKey === undefined) throw invalid('serve: hostKey is required (a key file path or a Buffer)')
  const listen = list(options.listen)
  if (!listen || listen.length === 0) throw invalid('serve: listen is required (such as "tcp://127.0.0.1:0")')
  return {
    ...options,
    listen,
    certAuthority: list(options.certAuthority),
    forwardPolicy: options.forwardPolicy === undefined ? undefined : policyInput(options.forwardPolicy)
  }
}

function reloadAuthOptions (options) {
  checkNames('reloadAuth', options, RELOAD_AUTH_OPTIONS)
  return { ...options, certAuthority: list(options.certAuthority) }
}

module.exports = { checkNames, connectOptions, serveOptions, reloadAuthOptions, policyInput, invalid }
