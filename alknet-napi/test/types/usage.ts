// How a TypeScript program uses the package; must type-check.
import { connect, serve, createAlknetEventTarget, AlknetError } from '../../alknet'
async function main (): Promise<void> {
  const server = await serve({ listen: 'tcp://127.0.0.1:0', hostKey: 'host', authorizedKeys: 'ak' })
  server.onConnection((stream, info) => { stream.pipe(stream); console.log(info.identity.id) })
  const stream = await connect({ server: server.addresses[0], identity: Buffer.from('x'), hostKey: server.hostKeyFingerprint })
  const events = createAlknetEventTarget({ stream })
  const list = await events.call<string[]>('/services/list', null, { timeoutMs: 1000 })
  for await (const tick of events.subscribe<number>('/ticks')) { console.log(tick, list) }
  try { await server.close() } catch (e) { if (e instanceof AlknetError) console.log(e.code) }
}
void main()
