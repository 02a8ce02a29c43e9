package collect

import (
	"bytes"
	"context"
	"github.com/nfclone/nfclone/internal/netnstest"
	"github.com/nfclone/nfclone/packet"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfclone/nfclone/sink"
	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) { netnstest.RequireRoot(t, "network namespaces, TAP devices") }

type colNS = netnstest.NS

// newColNS makes a namespace "col-<random>" with 10.77.98.1 on lo.
func newColNS(t *testing.T) *colNS {
	ns := netnstest.New(t, "col")
	ns.Sh(t, "ip addr add 10.77.98.1/32 dev lo")
	return ns
}

// startCollector starts c.Run; the returned stop cancels and joins it.
func startCollector(t *testing.T, c *Collector) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := c.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func sendBatch(t *testing.T, ns *colNS, kind string, to netip.AddrPort, vni uint32, datas [][]byte) {
	t.Helper()
	var tu *sink.Tunnel
	var err error
	ns.Run(func() {
		tu, err = sink.NewTunnel(sink.TunnelConfig{Kind: kind, VNI: vni, Remotes: []netip.AddrPort{to}})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tu.Close()
	batch := make([]*packet.Packet, len(datas))
	for i, d := range datas {
		batch[i] = packet.New(d)
	}
	if n, err := tu.Send(batch); n != len(batch) || err != nil {
		t.Fatalf("send %d %v", n, err)
	}
	for _, p := range batch {
		p.Release()
	}
}

func waitWritten(c *Collector, n uint64) {
	deadline := time.Now().Add(3 * time.Second)
	for c.Stats().Written < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// A marked Tunnel sink in its own namespace sends GENEVE to a collector on
// 10.77.98.1 that allows 10.77.0.0/16: the pcap holds the inner frames,
// and tshark reads them.
func TestRootCollectPcap(t *testing.T) {
	requireRoot(t)
	ns := newColNS(t)
	path := filepath.Join(t.TempDir(), "col.pcap")
	var c *Collector
	var err error
	ns.Run(func() {
		c, err = New(Config{Listen: "10.77.98.1:6081", PcapPath: path,
			Allow: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")}})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := startCollector(t, c)
	var datas [][]byte
	for i := range 10 {
		datas = append(datas, testIPv4(60+i, byte(i)))
	}
	sendBatch(t, ns, "geneve", netip.MustParseAddrPort("10.77.98.1:6081"), 124, datas)
	waitWritten(c, 10)
	stop()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	frames := readFrames(t, path)
	if len(frames) != 10 {
		t.Fatalf("%d frames, stats %+v", len(frames), c.Stats())
	}
	got := map[string]bool{}
	for _, f := range frames {
		got[string(f[14:])] = true
	}
	for _, d := range datas {
		if !got[string(d)] {
			t.Fatal("inner IP packet missing or changed")
		}
	}
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Log("tshark not installed: skipping")
		return
	}
	out, err := exec.Command("tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.protocols", "-e", "udp.srcport").Output()
	if err != nil {
		t.Fatalf("tshark: %v %s", err, out)
	}
	if n := strings.Count(string(out), "eth:ethertype:ip:udp"); n != 10 {
		t.Fatalf("tshark decodes %d of 10 frames:\n%s", n, out)
	}
}

// The collector's TAP device carries the inner frames: an AF_PACKET socket
// on it (what tcpdump uses) sees them; the device goes away on Close.
func TestRootCollectTap(t *testing.T) {
	requireRoot(t)
	ns := newColNS(t)
	var c *Collector
	var err error
	var capFD int = -1
	ns.Run(func() {
		c, err = New(Config{Listen: "127.0.0.1:4789", TapName: "coltap0", VNIs: []uint32{77}})
		if err != nil {
			return
		}
		ifi, e := net.InterfaceByName("coltap0")
		if e != nil {
			err = e
			return
		}
		if ifi.Flags&net.FlagUp == 0 {
			err = os.ErrInvalid
			return
		}
		capFD, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err == nil {
			err = unix.Bind(capFD, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(capFD)
	defer c.Close()
	tv := unix.Timeval{Usec: 200000}
	unix.SetsockoptTimeval(capFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	stop := startCollector(t, c)
	want := testIPv4(80, 0x5a)
	sendBatch(t, ns, "vxlan", netip.MustParseAddrPort("127.0.0.1:4789"), 77, [][]byte{want})
	sendBatch(t, ns, "vxlan", netip.MustParseAddrPort("127.0.0.1:4789"), 78, [][]byte{testIPv4(80, 0x5b)}) // filtered
	buf := make([]byte, 65536)
	deadline := time.Now().Add(3 * time.Second)
	found := false
	for !found && time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(capFD, buf, 0)
		if err != nil {
			continue
		}
		f := buf[:n]
		if n == 14+len(want) && bytes.Equal(f[14:], want) && bytes.Equal(f[:6], sink.DefaultTunnelDstMAC) {
			found = true
		}
		if n > 14 && f[len(f)-1] == 0x5b {
			t.Fatal("filtered VNI reached the tap")
		}
	}
	// The filtered datagram may still be in flight when the wanted frame
	// shows up: poll the counters until both datagrams were handled.
	settle := time.Now().Add(3 * time.Second)
	for time.Now().Before(settle) && c.Stats().FilteredVNI == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if !found {
		t.Fatalf("frame not seen on the tap; stats %+v", c.Stats())
	}
	if st := c.Stats(); st.FilteredVNI != 1 || st.Written != 1 {
		t.Fatalf("stats %+v", st)
	}
	c.Close()
	ns.Run(func() {
		if _, err := net.InterfaceByName("coltap0"); err == nil {
			t.Error("tap still exists after Close")
		}
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
