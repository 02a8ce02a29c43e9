package collect

import (
	"bytes"
	"context"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pcapfile"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/nfclone/nfclone/sink"
)

var (
	fuzzTime      = time.Unix(1700000000, 0)
	fuzzFrom      = netip.MustParseAddr("127.0.0.1")
	fuzzCollector = func() *Collector {
		w, err := pcapfile.Open(pcapfile.Config{Writer: io.Discard, LinkType: sink.LinkTypeEthernet})
		if err != nil {
			panic(err)
		}
		return &Collector{cfg: Config{Kind: KindAuto}, allowAll: true, pcap: w, log: nil}
	}()
)

func TestValidate(t *testing.T) {
	ok := []Config{
		{Listen: "127.0.0.1:4789", PcapPath: "x"},
		{Listen: "[::1]:6081", TapName: "t0"},
		{Listen: "localhost:4789", PcapPath: "-"},
		{Listen: ":4789", AllowAny: true, PcapPath: "x"},
		{Listen: "10.77.4.2:4789", Allow: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")}, PcapPath: "x", Kind: "geneve"},
	}
	for _, c := range ok {
		if err := Validate(c); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := map[string]Config{
		"no --allow":     {Listen: ":4789", PcapPath: "x"},
		"reachable":      {Listen: "0.0.0.0:4789", PcapPath: "x"},
		"no output":      {Listen: "127.0.0.1:4789"},
		"host must be":   {Listen: "example.com:4789", PcapPath: "x"},
		"want host:port": {Listen: "4789", PcapPath: "x"},
		"bad port":       {Listen: "127.0.0.1:http", PcapPath: "x"},
		"24 bits":        {Listen: "127.0.0.1:1", PcapPath: "x", VNIs: []uint32{1 << 24}},
		"kind":           {Listen: "127.0.0.1:1", PcapPath: "x", Kind: "gre"},
		"longer than":    {Listen: "127.0.0.1:1", TapName: "a-very-long-tap-name"},
	}
	for want, c := range bad {
		err := Validate(c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v (want %q)", c, err, want)
		}
	}
	if _, err := New(Config{Listen: ":0", PcapPath: filepath.Join(t.TempDir(), "x")}); err == nil {
		t.Error("New started without --allow on every address")
	}
}

func TestParseAllow(t *testing.T) {
	p, any, err := ParseAllow([]string{"10.77.0.0/16", "fd77::1", "any"})
	if err != nil || !any || len(p) != 2 || p[1].Bits() != 128 {
		t.Fatal(p, any, err)
	}
	if _, _, err := ParseAllow([]string{"10.77.0.0/33"}); err == nil {
		t.Fatal("accepted")
	}
}

func vxlan(vni uint32, inner []byte) []byte {
	b := make([]byte, 8+len(inner))
	sink.PutVXLAN(b, vni)
	copy(b[8:], inner)
	return b
}

func readFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != sink.LinkTypeEthernet {
		t.Fatalf("link type %v", r.LinkType())
	}
	var out [][]byte
	for {
		d, _, err := r.ReadPacketData()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
}

func TestHandleAllowVNIMalformed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.pcap")
	c, err := New(Config{Listen: "127.0.0.1:0", PcapPath: path, VNIs: []uint32{7, 8},
		Allow: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	now := time.Now()
	in := netip.MustParseAddr("10.77.4.1")
	c.Handle(now, in, vxlan(7, innerEth))                                        // written
	c.Handle(now, in, vxlan(9, innerEth))                                        // VNI filtered
	c.Handle(now, netip.MustParseAddr("10.78.0.1"), vxlan(7, innerEth))          // denied
	c.Handle(now, netip.MustParseAddr("127.0.0.1"), vxlan(7, innerEth))          // denied: --allow given
	c.Handle(now, in, []byte{1, 2, 3})                                           // malformed
	c.Handle(now, in, append([]byte{0, 0, 0x65, 0x58, 0, 0, 8, 0}, innerEth...)) // GENEVE, VNI 8
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	want := Stats{Received: 6, Decapsulated: 3, Written: 2, Malformed: 1, FilteredVNI: 1, DeniedSender: 2}
	if st := c.Stats(); st != want {
		t.Fatalf("stats %+v want %+v", st, want)
	}
	if fr := readFrames(t, path); len(fr) != 2 || !bytes.Equal(fr[0], innerEth) || !bytes.Equal(fr[1], innerEth) {
		t.Fatalf("frames %x", fr)
	}
	// Loopback without --allow: only local senders can reach it; accepted.
	c2, err := New(Config{Listen: "[::1]:0", PcapPath: filepath.Join(t.TempDir(), "d.pcap")})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Handle(now, netip.MustParseAddr("::1"), vxlan(1, innerEth))
	if st := c2.Stats(); st.Written != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A Tunnel sink sends to a Collector over loopback (no root: no mark);
// the pcap holds the inner frames: synthesized Ethernet + the IP packet.
func TestTunnelToCollectorLoopback(t *testing.T) {
	for _, tc := range []struct{ kind, listen string }{{"vxlan", "127.0.0.1:0"}, {"geneve", "[::1]:0"}} {
		t.Run(tc.kind, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.pcap")
			c, err := New(Config{Listen: tc.listen, PcapPath: path, VNIs: []uint32{42}})
			if err != nil {
				if strings.Contains(err.Error(), "address") && strings.Contains(tc.listen, "::1") {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var runErr error
			wg.Add(1)
			go func() { defer wg.Done(); runErr = c.Run(ctx) }()
			tu, err := sink.NewTunnel(sink.TunnelConfig{Kind: tc.kind, VNI: 42, NoMark: true,
				Remotes: []netip.AddrPort{c.Addr()}})
			if err != nil {
				t.Fatal(err)
			}
			defer tu.Close()
			var datas [][]byte
			for i := range 20 {
				datas = append(datas, testIPv4(100+i, byte(i)))
			}
			batch := make([]*packet.Packet, len(datas))
			for i, d := range datas {
				batch[i] = packet.New(d)
			}
			if n, err := tu.Send(batch); n != len(batch) || err != nil {
				t.Fatalf("send %d %v", n, err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for c.Stats().Written < uint64(len(batch)) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			wg.Wait()
			if runErr != nil {
				t.Fatal(runErr)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			frames := readFrames(t, path)
			if len(frames) != len(datas) {
				t.Fatalf("%d frames, stats %+v", len(frames), c.Stats())
			}
			got := map[string]bool{}
			for _, f := range frames {
				if !bytes.Equal(f[:6], sink.DefaultTunnelDstMAC) || f[12] != 8 || f[13] != 0 {
					t.Fatalf("inner ethernet %x", f[:14])
				}
				got[string(f[14:])] = true
			}
			for _, d := range datas {
				if !got[string(d)] {
					t.Fatal("inner packet missing or changed")
				}
			}
			for _, p := range batch {
				p.Release()
			}
		})
	}
}

// testIPv4 is a UDP/IPv4 packet of n bytes with a distinct source port.
func testIPv4(n int, k byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	b[2], b[3] = byte(n>>8), byte(n)
	b[8], b[9] = 64, 17
	copy(b[12:16], []byte{10, 77, 1, 2})
	copy(b[16:20], []byte{10, 77, 2, 2})
	c := sink.IPv4Checksum(b[:20])
	b[10], b[11] = byte(c>>8), byte(c)
	b[20], b[21] = 0x9c, k
	b[22], b[23] = 0, 9
	b[24], b[25] = byte((n-20)>>8), byte(n-20)
	for i := 28; i < n; i++ {
		b[i] = k
	}
	return b
}

// Run returns promptly when its context ends; garbage datagrams are
// counted, not fatal.
func TestRunStopsAndSurvivesGarbage(t *testing.T) {
	c, err := New(Config{Listen: "127.0.0.1:0", PcapPath: filepath.Join(t.TempDir(), "x")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, g := range [][]byte{{}, {8}, make([]byte, 9000), vxlan(1, innerEth[:3])} {
		conn.Write(g)
	}
	deadline := time.Now().Add(3 * time.Second)
	for c.Stats().Malformed < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.Stats(); st.Malformed != 4 || st.Received != 4 {
		t.Fatalf("stats %+v", st)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop")
	}
}
