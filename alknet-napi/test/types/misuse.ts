// Mistakes the types must catch: an unknown option, a missing identity,
// a wrong transport.
import { connect } from '../../alknet'
void connect({ server: 'h:1', identity: 'k', hostKye: 'SHA256:x' })
void connect({ server: 'h:1' })
void connect({ identity: 'k', transport: 'quic' })
