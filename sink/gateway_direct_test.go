package sink

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/nfclone/nfclone/gso"
)

// A gateway target sends through the packet socket to the gateway's
// link-layer address while the kernel has it, through the raw socket while
// it does not (and for one batch every rawEvery, so the kernel keeps the
// entry confirmed); super-packets go whole only on the packet socket.
func TestGatewayDirect(t *testing.T) {
	raw, pkt := &fakeSend{}, &fakeSend{}
	g := newGateway("gw", 1, 2, raw.fn, nil)
	g.only = 4
	dev := newDevice("gw", 5, 7, net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, pkt.fn, nil)
	dev.vnet = true
	var mac net.HardwareAddr
	clock := time.Unix(1000, 0)
	g.direct = newGwDirect(dev, func() (net.HardwareAddr, bool) { return mac, mac != nil })
	g.direct.now = func() time.Time { return clock }
	send := func(datas ...[]byte) {
		t.Helper()
		b := pkts(datas...)
		defer func() {
			for _, p := range b {
				p.Release()
			}
		}()
		NewWire(g, 1500).Send(b)
	}

	// No neighbour entry: the raw socket, and super-packets are cut.
	send(tcpSuper(t, 3000))
	if g.AcceptsGSO() || len(pkt.got) != 0 || len(raw.got) != 3 {
		t.Fatalf("without a neighbour: accepts GSO %v, %d packet-socket and %d raw sends, want false, 0, 3", g.AcceptsGSO(), len(pkt.got), len(raw.got))
	}

	// The kernel resolves the gateway (read at most once a second).
	mac = net.HardwareAddr{2, 0x4e, 0x43, 0, 0, 9}
	clock = clock.Add(neighbourEvery)
	g.direct.nextRaw.Store(clock.Add(time.Hour).UnixNano())
	send(tcpSuper(t, 30000), ipv6(100))
	if len(pkt.got) != 1 {
		t.Fatalf("with a neighbour: %d packet-socket sends, want 1 (the super-packet whole; the IPv6 copy is not this target's)", len(pkt.got))
	}
	f := pkt.got[0][gso.VirtioNetHdrLen:]
	if !bytes.Equal(f[:6], mac) || pkt.got[0][1] != 1 {
		t.Errorf("frame to % x with GSO type %d, want the gateway's % x and TCPv4", f[:6], pkt.got[0][1], mac)
	}

	// Once every rawEvery a batch without super-packets takes the raw socket.
	clock = clock.Add(time.Hour)
	before := len(raw.got)
	send(tcpSuper(t, 100))
	if len(raw.got) != before+1 {
		t.Errorf("the keep-alive batch did not take the raw socket")
	}
	send(tcpSuper(t, 100))
	if len(pkt.got) != 2 {
		t.Errorf("after the keep-alive batch copies did not return to the packet socket (%d sends)", len(pkt.got))
	}
	if st := g.Stats(); st.Sent != uint64(len(raw.got)+len(pkt.got)) {
		t.Errorf("the target counts %d sent, the two sockets sent %d", st.Sent, len(raw.got)+len(pkt.got))
	}
}
