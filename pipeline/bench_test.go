package pipeline

import (
	"context"
	"fmt"
	"github.com/nfclone/nfclone/internal/testpkt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nfclone/nfclone/packet"
)

func BenchmarkCopyQueuePushPop(b *testing.B) {
	q := NewCopyQueue(1024, 0)
	p := packet.New(testpkt.IPv4(64, [4]byte{}))
	dst := make([]*packet.Packet, 64)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; i < b.N; i += 64 {
		for j := 0; j < 64; j++ {
			q.Push(p)
		}
		q.PopBatch(ctx, dst)
	}
}

// BenchmarkCopyQueueBatches: readers push read batches of 32 or 64 copies
// (as a reader does after one recvmmsg), two workers pop their lanes. One
// op is one copy through the queue; readers wait for room for a batch
// (the real ones back off while the queue is full), so little is dropped.
func BenchmarkCopyQueueBatches(b *testing.B) {
	for _, bc := range []struct{ readers, batch int }{{1, 32}, {1, 64}, {2, 64}} {
		b.Run(fmt.Sprintf("readers=%d/batch=%d", bc.readers, bc.batch), func(b *testing.B) {
			q := NewLaneQueue(4096, 0, 2)
			// 64 flows over the two lanes.
			flows := make([][]byte, 64)
			for i := range flows {
				flows[i] = testpkt.IPv4(64, [4]byte{10, 77, byte(i), 2})
			}
			var popped atomic.Int64
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					dst := make([]*packet.Packet, WorkerBatch)
					for {
						n := q.PopLane(ctx, w, dst)
						if n == 0 {
							return
						}
						for _, p := range dst[:n] {
							p.Release()
						}
						popped.Add(int64(n))
					}
				}()
			}
			b.ReportAllocs()
			b.ResetTimer()
			var rwg sync.WaitGroup
			per := b.N / bc.readers
			var dropped atomic.Int64
			for r := 0; r < bc.readers; r++ {
				rwg.Add(1)
				go func() {
					defer rwg.Done()
					batch := make([]*packet.Packet, 0, bc.batch)
					for i := 0; i < per; {
						for q.Len() > q.Cap()-bc.batch { // room for the batch
							runtime.Gosched()
						}
						batch = batch[:0]
						for j := 0; j < bc.batch && i < per; j, i = j+1, i+1 {
							p := packet.Get(64)
							p.Data = p.Data[:copy(p.Data, flows[(i+r)%len(flows)])]
							batch = append(batch, p)
						}
						k := len(batch)
						dropped.Add(int64(k - q.PushBatch(batch)))
					}
				}()
			}
			rwg.Wait()
			want := int64(per*bc.readers) - dropped.Load()
			for popped.Load() < want {
				runtime.Gosched()
			}
			b.StopTimer()
			cancel()
			wg.Wait()
			b.ReportMetric(float64(dropped.Load())/float64(b.N), "drops/op")
		})
	}
}
