// The TypeScript declarations (alknet.d.ts): a program using every entry
// point type-checks, and common mistakes do not.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'

import { run } from './helpers.mjs'

const here = import.meta.dirname
const tsc = join(here, '..', 'node_modules', 'typescript', 'bin', 'tsc')
const flags = ['--noEmit', '--strict', '--types', 'node', '--target', 'es2022', '--module', 'commonjs']

describe('types', { timeout: 120_000 }, () => {
  it('a program using connect, serve and the event target type-checks', async () => {
    const checked = await run(process.execPath, [tsc, ...flags, join(here, 'types', 'usage.ts')], { timeoutMs: 110_000 })
    assert.equal(checked.status, 0, checked.stdout + checked.stderr)
  })

  it('an unknown option, a missing identity and a wrong transport are type errors', async () => {
    const checked = await run(process.execPath, [tsc, ...flags, join(here, 'types', 'misuse.ts')], { timeoutMs: 110_000 })
    assert.notEqual(checked.status, 0)
    assert.match(checked.stdout, /'hostKye' does not exist/)
    assert.match(checked.stdout, /identity/)
    assert.match(checked.stdout, /"quic"/)
  })
})
