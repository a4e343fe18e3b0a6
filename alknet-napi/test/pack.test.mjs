// `npm pack` makes a package that installs and loads elsewhere.

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { writeFileSync } from 'node:fs'

import { run, workdir } from './helpers.mjs'

const addon = join(import.meta.dirname, '..')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

describe('package', { timeout: 120_000 }, () => {
  it('npm pack gives a tarball that installs offline and exports the API with types', async () => {
    const dir = workdir()
    const packed = await run(npm, ['pack', '--json', '--pack-destination', dir], { cwd: addon })
    assert.equal(packed.status, 0, packed.stderr)
    const [{ filename, files }] = JSON.parse(packed.stdout)
    const names = files.map((file) => file.path)
    for (const needed of ['alknet.js', 'alknet.d.ts', 'index.js', 'lib/duplex.js', 'package.json']) {
      assert.ok(names.includes(needed), `${needed} missing from ${names}`)
    }
    assert.ok(names.some((name) => name.endsWith('.node')), 'no native addon in the package')
    assert.ok(!names.some((name) => name.startsWith('test/') || name.startsWith('src/')), 'tests or Rust sources packed')

    writeFileSync(join(dir, 'package.json'), '{"name":"app","private":true}')
    const installed = await run(npm, ['install', '--offline', '--no-audit', '--no-fund', join(dir, filename)], { cwd: dir })
    assert.equal(installed.status, 0, installed.stderr)
    const loaded = await run(process.execPath, ['-e',
      "const a = require('alknet'); console.log(Object.keys(a).sort().join(','))"], { cwd: dir })
    assert.equal(loaded.status, 0, loaded.stderr)
    assert.equal(loaded.stdout.trim(), 'AlknetError,AlknetEventTarget,AlknetServer,connect,createAlknetEventTarget,serve')
  })
})
