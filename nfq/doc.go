// Package nfq holds nfclone's NFQUEUE and NFLOG readers: they bind a queue
// of clones or a log group, read it in batches, parse the kernel's messages
// in place and push copies into a pipeline.CopyQueue, counting what the
// kernel and they lost in the session's pipeline.Ledger.
package nfq
