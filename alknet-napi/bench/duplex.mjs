// Bulk download through one connect() Duplex, for `cargo xtask bench`:
//
//   node bench/duplex.mjs SERVER IDENTITY HOST_KEY TARGET BYTES RUNS
//
// Each run opens a session with one channel to TARGET (xtask's HTTP
// target), asks for BYTES and reads them; prints {"speeds": [bytes/s, …]}.

import alknet from '../alknet.js'

const [server, identity, hostKey, target, bytesText, runsText] = process.argv.slice(2)
const bytes = Number(bytesText)
const runs = Number(runsText)

async function once () {
  const stream = await alknet.connect({ server, identity, hostKey, target })
  const started = process.hrtime.bigint()
  stream.write(`GET /${bytes} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n`)
  let head = Buffer.alloc(0)
  let body = -1
  for await (const chunk of stream) {
    if (body < 0) {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) continue
      body = head.length - end - 4
    } else {
      body += chunk.length
    }
    if (body >= bytes) break
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  stream.destroy()
  if (body !== bytes) throw new Error(`got ${body} of ${bytes} bytes`)
  return bytes / seconds
}

const speeds = []
for (let run = 0; run < runs; run++) speeds.push(await once())
console.log(JSON.stringify({ speeds }))
