'use strict'
// alknet for Node.js.
//
//   connect(options) → Promise<Duplex>: one SSH channel (by default to the
//     server's control channel, alknet-control:0) in its own session.
//   serve(options) → Promise<AlknetServer>: an alknet server in this process.
//   createAlknetEventTarget({ stream }) → an EventTarget speaking alknet's
//     envelope framing and call protocol over any Duplex.
//
// Errors are AlknetErrors with a stable `code`.

const binding = require('./index.js')
const { ChannelDuplex } = require('./lib/duplex.js')
const { AlknetError, native } = require('./lib/errors.js')
const { AlknetEventTarget, createAlknetEventTarget } = require('./lib/event-target.js')
const { connectOptions, serveOptions } = require('./lib/options.js')
const { AlknetServer } = require('./lib/server.js')

async function connect (options) {
  const channel = await native(Promise.resolve().then(() => binding.connect(connectOptions(options))))
  return new ChannelDuplex(channel)
}

async function serve (options) {
  const server = await native(Promise.resolve().then(() => binding.serve(serveOptions(options))))
  return new AlknetServer(server)
}

module.exports = {
  connect,
  serve,
  createAlknetEventTarget,
  AlknetError,
  AlknetEventTarget,
  AlknetServer
}
