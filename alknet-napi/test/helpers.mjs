// What the addon's tests share: keys made by ssh-keygen, the real `alknet`
// binary (ALKNET_BIN, set by `cargo xtask test`) started on loopback ports
// and stopped by PID, and small loopback targets.

import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
export const workspace = join(here, '..', '..')
const targetDir = process.env.CARGO_TARGET_DIR ?? join(workspace, 'target')
export const alknetBin = process.env.ALKNET_BIN ?? join(targetDir, 'debug', 'alknet')
export const tickerBin = process.env.ALKNET_TICKER ?? join(targetDir, 'debug', 'examples', 'ticker')

/** Bounds every wait in these tests. */
export const LIMIT_MS = 30_000

export function workdir () {
  return mkdtempSync(join(tmpdir(), 'alknet-napi-'))
}

/** A fresh Ed25519 key pair by ssh-keygen: returns the private key's path. */
export function keygen (dir, name) {
  const path = join(dir, name)
  const made = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', path])
  if (made.status !== 0) throw new Error(`ssh-keygen failed: ${made.stderr}`)
  return path
}

/** A child process whose stderr (or stdout) is searched for lines. */
class Child {
  constructor (command, args, options = {}) {
    this.output = ''
    this.process = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...options })
    this.process.stdout.on('data', (chunk) => { this.output += chunk })
    this.process.stderr.on('data', (chunk) => { this.output += chunk })
    this.exited = new Promise((resolve) => this.process.on('exit', resolve))
  }

  /** Waits for a line matching `pattern`; returns its match. */
  async waitFor (pattern, limitMs = LIMIT_MS) {
    const deadline = Date.now() + limitMs
    for (;;) {
      const match = pattern.exec(this.output)
      if (match) return match
      if (Date.now() > deadline) throw new Error(`no ${pattern} within ${limitMs} ms:\n${this.output}`)
      if (this.process.exitCode !== null) throw new Error(`exited (${this.process.exitCode}) before ${pattern}:\n${this.output}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  /** Stops it by its PID and waits for it. */
  async stop () {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      process.kill(this.process.pid, 'SIGTERM')
      const killer = setTimeout(() => {
        try { process.kill(this.process.pid, 'SIGKILL') } catch {}
      }, 5000)
      await this.exited
      clearTimeout(killer)
    }
  }
}

/**
 * `alknet serve` with fresh keys on a loopback port. `authorizedLine` adds
 * words to the user key's authorized_keys line.
 */
export async function startServer (dir, { args = [], listen = ['127.0.0.1:0'], authorizedSuffix = '' } = {}) {
  const hostKey = keygen(dir, 'host')
  const userKey = keygen(dir, 'user')
  const authorizedKeys = join(dir, 'authorized_keys')
  writeFileSync(authorizedKeys, `${readFileSync(`${userKey}.pub`, 'utf8').trim()} ${authorizedSuffix}\n`)
  const listenArgs = listen.flatMap((address) => ['--listen', address])
  const child = new Child(alknetBin, ['serve', '--key', hostKey, '--authorized-keys', authorizedKeys, ...listenArgs, ...args], {
    env: { ...process.env, RUST_LOG: 'info' }
  })
  const ready = await child.waitFor(/alknet server ready .*host_key=(SHA256:\S+)/)
  const tcp = /listening listen=tcp:\/\/127\.0\.0\.1:(\d+)/.exec(child.output)
  const endpoint = /endpoint-id: (\S+)/.exec(child.output)
  return {
    child,
    hostKey,
    userKey,
    authorizedKeys,
    fingerprint: ready[1],
    port: tcp ? Number(tcp[1]) : null,
    endpointId: endpoint ? endpoint[1] : null,
    stop: () => child.stop()
  }
}

/** `alknet connect` (SOCKS5 on a free port) with extra arguments. */
export async function startClient (port, identity, fingerprint, args = []) {
  const child = new Child(alknetBin, [
    'connect', '--server', `127.0.0.1:${port}`, '--identity', identity, '--host-key', fingerprint,
    '--socks5', '127.0.0.1:0', ...args
  ], { env: { ...process.env, RUST_LOG: 'info' } })
  const socks = await child.waitFor(/SOCKS5 listening socks5=127\.0\.0\.1:(\d+)/)
  await child.waitFor(/ connected server=/)
  return { child, socksPort: Number(socks[1]), stop: () => child.stop() }
}

export { Child }

/** A loopback TCP server running `onSocket` per connection. */
export function tcpServer (onSocket) {
  return new Promise((resolve) => {
    const server = createServer((socket) => {
      // A tunnel that closes before reading what the target sent resets
      // the target's connection (closing a socket with unread data does):
      // a target here has nothing to do about it, and an unhandled 'error'
      // would end the whole test process.
      socket.on('error', () => {})
      onSocket(socket)
    })
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

/**
 * Runs `command` to completion without blocking the event loop (the
 * server or target under test may live in this very process); resolves
 * { status, stdout, stderr }. Killed by its PID after `timeoutMs`.
 */
export function run (command, args, { timeoutMs = LIMIT_MS, ...options } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk) => { stdout += chunk })
    child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr += chunk })
    const killer = setTimeout(() => process.kill(child.pid, 'SIGKILL'), timeoutMs)
    child.on('error', (error) => { clearTimeout(killer); reject(error) })
    child.on('close', (status) => { clearTimeout(killer); resolve({ status, stdout, stderr }) })
  })
}

/** Runs `alknet …` to completion; resolves { status, stdout, stderr }. */
export function alknet (args, options = {}) {
  return run(alknetBin, args, options)
}

export function copy (from, to) {
  copyFileSync(from, to)
}
