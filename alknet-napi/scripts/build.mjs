// Builds the addon with a plain `cargo build` (so it shares the workspace's
// compiled dependencies; `napi build` always passes --target, which puts
// artifacts elsewhere and rebuilds every dependency), then lets
// @napi-rs/cli write the loader (index.js) and the native declarations
// (index.d.ts) from what napi-derive recorded during the build.
//
//   node scripts/build.mjs [--release] [--no-default-features]

import { spawnSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { generateTypeDef, writeJsBinding } from '@napi-rs/cli'

const here = dirname(dirname(fileURLToPath(import.meta.url)))
const workspace = dirname(here)
const release = process.argv.includes('--release')
const noDefault = process.argv.includes('--no-default-features')
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'))
const cargo = process.env.CARGO ?? 'cargo'
const targetDir = process.env.CARGO_TARGET_DIR ?? join(workspace, 'target')
const typeDefDir = join(targetDir, 'napi-rs', 'alknet-napi', 'type-def')
mkdirSync(typeDefDir, { recursive: true })
// napi's macros write the type definitions as they expand, and cargo expands
// them again whenever this crate or a dependency changed (the folder's
// variable is part of its fingerprint). Forcing a rebuild is needed only
// when the files of the last expansion are gone; forcing it every time
// cost every `cargo xtask bench` a 2.5-minute release build.
const haveTypeDefs = readdirSync(typeDefDir).length > 0

const args = ['build', '--package', 'alknet-napi', '--lib', '--message-format=json-render-diagnostics']
if (release) args.push('--release')
if (noDefault) args.push('--no-default-features')
const build = spawnSync(cargo, args, {
  cwd: workspace,
  stdio: ['ignore', 'pipe', 'inherit'],
  maxBuffer: 256 * 1024 * 1024,
  env: {
    ...process.env,
    NAPI_TYPE_DEF_TMP_FOLDER: typeDefDir,
    // Expand the macros again so the type definitions are written.
    ...(haveTypeDefs ? {} : { NAPI_FORCE_BUILD_ALKNET_NAPI: String(Date.now()) }),
  },
})
if (build.status !== 0) {
  console.error('alknet-napi: cargo build failed')
  process.exit(1)
}
const library = build.stdout
  .toString()
  .split('\n')
  .filter((line) => line.startsWith('{'))
  .map((line) => JSON.parse(line))
  .filter((message) => message.reason === 'compiler-artifact' && message.target?.name === 'alknet_napi')
  .flatMap((message) => message.filenames)
  .find((file) => /\.(so|dylib|dll)$/.test(file))
if (!library) {
  console.error('alknet-napi: cargo reported no library')
  process.exit(1)
}

// The file name the generated loader looks for: alknet.<platform>-<arch>[-<abi>].node
const abi = process.platform === 'linux' ? (process.report?.getReport?.().header?.glibcVersionRuntime ? '-gnu' : '-musl') : ''
const nodeFile = `${pkg.napi.binaryName}.${process.platform}-${process.arch}${abi}.node`
copyFileSync(library, join(here, nodeFile))
// The package ships no debug info (a debug build's is ~400 MB): release
// builds are stripped whole, debug builds keep their symbols for backtraces.
const stripped = spawnSync('strip', [...(release ? [] : ['--strip-debug']), join(here, nodeFile)], { stdio: 'inherit' })
if (stripped.error || stripped.status !== 0) console.warn('alknet-napi: strip unavailable; the addon keeps its debug info')

const { exports, dts } = await generateTypeDef({ typeDefDir, cwd: here, declareBindingTarget: true })
writeFileSync(join(here, 'index.d.ts'), dts)
await writeJsBinding({
  platform: true,
  idents: exports,
  binaryName: pkg.napi.binaryName,
  packageName: pkg.name,
  version: pkg.version,
  outputDir: here,
})
console.log(`alknet-napi: built ${nodeFile} (${release ? 'release' : 'debug'}), index.js, index.d.ts`)
