package sink

import (
	"github.com/nfclone/nfclone/packet"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

func nopSend(fd int, hdrs []unix.Mmsghdr) (int, error) { return len(hdrs), nil }

func benchBatch(n, size int) []*packet.Packet {
	b := make([]*packet.Packet, n)
	for i := range b {
		if i%4 == 3 {
			b[i] = packet.New(ipv6(size))
		} else {
			b[i] = packet.New(ipv4(size, [4]byte{10, 77, 2, 2}))
		}
	}
	return b
}

// One op = one copy (batches of 64; the syscall is faked).
func BenchmarkGatewayBuildBatch(b *testing.B) {
	g := newGateway("gw", 1, 2, nopSend, nil)
	batch := benchBatch(64, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i += 64 {
		g.Send(batch)
	}
}

func BenchmarkDeviceBuildBatch(b *testing.B) {
	d := newDevice("dev", 1, 2, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, nopSend, nil)
	batch := benchBatch(64, 64)
	b.ReportAllocs()
	for i := 0; i < b.N; i += 64 {
		d.Send(batch)
	}
}

func BenchmarkFixTruncatedV4(b *testing.B) {
	full := ipv4(1500, [4]byte{10, 77, 2, 2})
	p := packet.New(full[:128])
	p.OrigLen = 1500
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		FixTruncated(p)
	}
}

func BenchmarkPutEthernet(b *testing.B) {
	p := packet.New(ipv4(64, [4]byte{}))
	var dst, src [6]byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		PutEthernet(p.Frame(EthHdrLen), dst, src, unix.ETH_P_IP)
	}
}
