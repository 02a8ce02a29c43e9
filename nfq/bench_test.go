package nfq

import (
	"github.com/nfclone/nfclone/internal/testpkt"
	"testing"

	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
)

func BenchmarkParseQueuePacket(b *testing.B) {
	msg := queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(64, [4]byte{10, 77, 0, 2}), inIf: 2, hw: []byte{2, 0, 0, 0, 0, 1}})
	var pi pktInfo
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		m, _, _ := nextMsg(msg)
		if err := parseQueuePacket(m.body, &pi); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReaderProcess is the reader's per-packet work: parse, gap and
// verdict bookkeeping, pooled copy, push; plus a consumer's pop and release.
// One op = one packet (batches of 64 datagrams, one verdict per batch).
func BenchmarkReaderProcess(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(map[int]string{64: "64B", 1500: "1500B"}[size], func(b *testing.B) {
			sock := newFakeSock()
			q := pipeline.NewCopyQueue(4096, 0)
			qr, err := newQueueReader(QueueConfig{Num: 1, Batch: 64, Snaplen: 2048}, sock, q, &pipeline.Ledger{})
			if err != nil {
				b.Fatal(err)
			}
			r := qr.r
			msg := queuePacketMsg(qpkt{id: 1, data: testpkt.IPv4(size, [4]byte{10, 77, 0, 2})})
			for i := range r.bufs {
				copy(r.bufs[i], msg)
				r.lens[i] = len(msg)
			}
			dst := make([]*packet.Packet, 64)
			id := uint32(1)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for done := 0; done < b.N; done += 64 {
				for i := range r.bufs {
					binaryPutID(r.bufs[i], id)
					id++
				}
				r.process(64)
				r.flush()
				for _, p := range dst[:q.TryPopBatch(dst)] {
					p.Release()
				}
			}
		})
	}
}

func BenchmarkPacketGetRelease(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		packet.Get(128).Release()
	}
}
