// Package nfq is nfclone's userspace data path: NFQUEUE and NFLOG readers,
// the bounded copy queue between readers and workers, the per-session ledger
// of offered/copied/dropped copies, and the worker pool that hands copies to
// sinks.
package nfq
