// Package node is the node agent of the palyra CLI: its state directory, its key and
// certificate, pairing with palyrad, and the Agent, which attaches to palyrad, runs
// dispatches with the capabilities of package capability, spools their results with
// their output and renews its certificate, following the numbered steps of the Attach
// protocol (AttachRequest in proto/palyra/node/v1/node.proto).
//
// Pairing follows the steps of NodeService in proto/palyra/node/v1/node.proto:
//
//  1. Trust: the node connects pinned to the CA fingerprint it was given, calls
//     GetServerInfo and checks that the CA certificate it returns has that fingerprint;
//     from then on it trusts that CA alone.
//  2. Key: the node uses the key in its state directory when it has no certificate
//     yet, else (and when pairing again) generates an ECDSA P-256 key. The private key
//     is written to key.pem (0600) and never sent nor printed.
//  3. Request: StartPairing with the code and a CSR for the key. The request id and
//     the pairing secret go to pairing.json (0600), so that a node that stops waiting
//     resumes the same request instead of pairing again.
//  4. Decision: the node watches the request (WatchPairing), reconnecting with backoff
//     and falling back to polling GetPairingStatus when the stream keeps failing.
//  5. Approved: the node checks the certificate (its key, the pinned CA, its device
//     id) and stores cert.pem, ca.pem and node-host.json; the secret is removed.
//     Rejected or expired: the secret is removed and the reason reported.
package node
