package nfq

import (
	"context"
	"sync"
)

// WorkerBatch is the number of copies a worker pops and sends at once.
const WorkerBatch = 64

// RunWorkers runs n workers (n < 1 is taken as 1) that pop batches of copies
// from q and call send with each batch; after send returns, the worker
// releases every packet of the batch (send must not keep them). When ctx is
// done the workers send what is still queued and exit; RunWorkers returns
// after every worker has exited.
func RunWorkers(ctx context.Context, q *CopyQueue, n int, send func(batch []*Packet)) {
	if n < 1 {
		n = 1
	}
	var wg sync.WaitGroup
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer wg.Done()
			worker(ctx, q, send)
		}()
	}
	wg.Wait()
}

func worker(ctx context.Context, q *CopyQueue, send func(batch []*Packet)) {
	var arr [WorkerBatch]*Packet
	for {
		k := q.PopBatch(ctx, arr[:])
		if k == 0 {
			return
		}
		deliver(arr[:k], send)
	}
}

func deliver(batch []*Packet, send func(batch []*Packet)) {
	send(batch)
	for i, p := range batch {
		p.Release()
		batch[i] = nil
	}
}

// Pool is RunWorkers in the background: Start it, Stop it (or cancel its
// context), Wait for it.
type Pool struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// StartPool starts n workers; they stop when ctx is done or Stop is called.
func StartPool(ctx context.Context, q *CopyQueue, n int, send func(batch []*Packet)) *Pool {
	ctx, cancel := context.WithCancel(ctx)
	p := &Pool{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		RunWorkers(ctx, q, n, send)
	}()
	return p
}

// Stop asks the workers to finish what is queued and exit, and waits.
func (p *Pool) Stop() {
	p.cancel()
	<-p.done
}

// Wait waits until the workers have exited.
func (p *Pool) Wait() { <-p.done }
