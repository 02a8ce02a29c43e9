package pipeline

import (
	"context"
	"github.com/nfclone/nfclone/packet"
	"sync"
)

// WorkerBatch is the number of copies a worker pops and sends at once.
const WorkerBatch = 64

// RunWorkers runs n workers (n < 1 is taken as 1) that pop batches of copies
// from q and call send with each batch; after send returns, the worker
// releases every packet of the batch (send must not keep them). When ctx is
// done the workers send what is still queued and exit; RunWorkers returns
// after every worker has exited.
func RunWorkers(ctx context.Context, q *CopyQueue, n int, send func(batch []*packet.Packet)) {
	if n < 1 {
		n = 1
	}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer wg.Done()
			worker(ctx, q, i, send)
		}()
	}
	wg.Wait()
}

// worker i takes from lane i (a queue with as many lanes as workers keeps
// each flow on one worker, in order).
func worker(ctx context.Context, q *CopyQueue, lane int, send func(batch []*packet.Packet)) {
	var arr [WorkerBatch]*packet.Packet
	for {
		k := q.PopLane(ctx, lane, arr[:])
		if k == 0 {
			return
		}
		SendAndRelease(arr[:k], send)
	}
}

// SendAndRelease calls send with batch, then releases every packet of it
// and clears its slots (send must not keep them): what a worker does with
// each batch it pops, and a hold reader with each batch it reads.
func SendAndRelease(batch []*packet.Packet, send func(batch []*packet.Packet)) {
	send(batch)
	for i, p := range batch {
		p.Release()
		batch[i] = nil
	}
}
