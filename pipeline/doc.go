// Package pipeline is what lies between nfclone's readers and its sinks:
// the bounded copy queue with its per-flow lanes, the workers that pop
// batches and hand them to a sink, and the per-session ledger of offered,
// copied and dropped copies.
package pipeline
