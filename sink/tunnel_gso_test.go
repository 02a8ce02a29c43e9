package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/nfclone/nfclone/internal/mmsg"
	"github.com/nfclone/nfclone/packet"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestSegCmsgBytes(t *testing.T) {
	var c segCmsg
	c.put(1472)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&c)), unsafe.Sizeof(c))
	if len(b) != unix.CmsgSpace(2) {
		t.Fatalf("%d bytes, CMSG_SPACE(2) is %d", len(b), unix.CmsgSpace(2))
	}
	// struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }
	// then the data, in host byte order.
	want := make([]byte, len(b))
	binary.NativeEndian.PutUint64(want[0:8], uint64(unix.CmsgLen(2)))
	binary.NativeEndian.PutUint32(want[8:12], unix.SOL_UDP)
	binary.NativeEndian.PutUint32(want[12:16], unix.UDP_SEGMENT)
	binary.NativeEndian.PutUint16(want[16:18], 1472)
	if !bytes.Equal(b, want) {
		t.Fatalf("cmsg %x\nwant %x", b, want)
	}
	msgs, err := unix.ParseSocketControlMessage(b)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("parse: %v %v", msgs, err)
	}
	m := msgs[0]
	if m.Header.Level != unix.SOL_UDP || m.Header.Type != unix.UDP_SEGMENT || len(m.Data) != 2 ||
		binary.NativeEndian.Uint16(m.Data) != 1472 {
		t.Fatalf("parsed %+v %x", m.Header, m.Data)
	}
}

// tcpSeg4 is an IPv4 TCP packet of n bytes (20-byte TCP header) from
// 10.77.1.2:sport to 10.77.4.2:5201 with sequence number seq.
func tcpSeg4(sport uint16, seq uint32, n int) []byte {
	b := ipv4(n, [4]byte{10, 77, 4, 2})
	b[9] = 6
	binary.BigEndian.PutUint16(b[20:22], sport)
	binary.BigEndian.PutUint16(b[22:24], 5201)
	binary.BigEndian.PutUint32(b[24:28], seq)
	b[32] = 5 << 4
	return b
}

// seg is one copy of a planGSO case: its frame length (tunnel header
// included), and how it relates to the copy before: 0 the next segment of
// the same TCP stream, 'g' a gap in the sequence, 'o' another stream, 'u'
// UDP, 't' cut by a snaplen, 'r' the same stream to another remote.
type seg struct {
	l    int
	kind byte
}

func segs(l, n int) []seg {
	s := make([]seg, n)
	for i := range s {
		s[i] = seg{l: l}
	}
	return s
}

func cat(s ...[]seg) []seg {
	var out []seg
	for _, x := range s {
		out = append(out, x...)
	}
	return out
}

// planCase runs planGSO on copies described by ss and returns the runs'
// lengths and segment sizes (0: no control message).
func planCase(ss []seg) (runs []int, sizes []int) {
	var ra, rb tunRemote
	sc := &tunScratch{}
	n := len(ss)
	sc.h, sc.iov, sc.r, sc.msg, sc.ctl, sc.p = make([]unix.Mmsghdr, n), make([]unix.Iovec, n), make([]*tunRemote, n),
		make([]tunMsg, n), make([]segCmsg, n), make([]*packet.Packet, n)
	seq, sport := uint32(1000), uint16(40000)
	r := &ra
	for i, x := range ss {
		l := x.l - tunnelFrameHdr
		switch x.kind {
		case 'g':
			seq += 7
		case 'o':
			sport++
		case 'r':
			if r == &ra {
				r = &rb
			} else {
				r = &ra
			}
		}
		var d []byte
		if x.kind == 'u' {
			d = udp4(l, 1, 64, 0xee)
		} else {
			d = tcpSeg4(sport, seq, l)
			seq += uint32(l - 40)
		}
		p := packet.New(d)
		if x.kind == 't' {
			p.OrigLen = l + 100
		}
		sc.p[i], sc.r[i] = p, r
		mmsg.Iov(&sc.iov[i], p.Frame(tunnelFrameHdr))
	}
	end := planGSO(sc, 0, n)
	next := 0
	for m := 0; m < end; m++ {
		h := &sc.h[m].Hdr
		if int(sc.msg[m].first) != next || int(h.Iovlen) != int(sc.msg[m].n) || h.Iov != &sc.iov[next] {
			panic(fmt.Sprintf("message %d: first %d n %d iovlen %d, want first %d", m, sc.msg[m].first, sc.msg[m].n, h.Iovlen, next))
		}
		size := 0
		if h.Controllen > 0 {
			c := (*segCmsg)(unsafe.Pointer(h.Control))
			size = int(c.size)
		}
		runs = append(runs, int(sc.msg[m].n))
		sizes = append(sizes, size)
		next += int(sc.msg[m].n)
	}
	if next != n {
		panic("copies left out")
	}
	for _, p := range sc.p {
		p.Release()
	}
	return runs, sizes
}

func TestPlanGSO(t *testing.T) {
	for _, c := range []struct {
		name        string
		segs        []seg
		runs, sizes []int
	}{
		{"one", segs(100, 1), []int{1}, []int{0}},
		{"equal", segs(1472, 5), []int{5}, []int{1472}},
		{"shorter last", cat(segs(1472, 3), segs(500, 1)), []int{4}, []int{1472}},
		{"shorter ends the run", cat(segs(1472, 3), segs(500, 1), segs(1472, 2)), []int{4, 2}, []int{1472, 1472}},
		{"longer starts a run", cat(segs(500, 1), segs(1472, 2)), []int{1, 2}, []int{0, 1472}},
		{"small segments", segs(80, 3), []int{3}, []int{80}},
		{"no data", segs(62, 3), []int{1, 1, 1}, []int{0, 0, 0}},
		{"remote change", cat(segs(1000, 2), []seg{{1000, 'r'}, {1000, 0}}, []seg{{1000, 'r'}}), []int{2, 2, 1}, []int{1000, 1000, 0}},
		{"gap", cat(segs(1000, 2), []seg{{1000, 'g'}, {1000, 0}}), []int{2, 2}, []int{1000, 1000}},
		{"other stream", cat(segs(1000, 2), []seg{{1000, 'o'}}), []int{2, 1}, []int{1000, 0}},
		{"UDP", []seg{{1000, 'u'}, {1000, 'u'}, {1000, 'u'}}, []int{1, 1, 1}, []int{0, 0, 0}},
		{"snaplen", cat(segs(1000, 2), []seg{{1000, 't'}}), []int{2, 1}, []int{1000, 0}},
		{"64 at most", segs(100, 130), []int{64, 64, 2}, []int{100, 100, 100}},
		// 44 × 1472 = 64768 fits in 65487 bytes, 45 do not.
		{"bytes at most", segs(1472, 47), []int{44, 3}, []int{1472, 1472}},
		{"shorter last over the byte limit", cat(segs(1472, 44), segs(900, 1)), []int{44, 1}, []int{1472, 0}},
		{"big segments", segs(9000, 2), []int{2}, []int{9000}},
		{"too big for two", segs(40000, 2), []int{1, 1}, []int{0, 0}},
	} {
		runs, sizes := planCase(c.segs)
		if fmt.Sprint(runs) != fmt.Sprint(c.runs) || fmt.Sprint(sizes) != fmt.Sprint(c.sizes) {
			t.Errorf("%s: runs %v sizes %v, want %v %v", c.name, runs, sizes, c.runs, c.sizes)
		}
	}
}

func TestTCPSpan(t *testing.T) {
	b := tcpSeg4(40000, 0xfffffff0, 100) // 60 bytes of data, wrapping
	off, seq, end, ok := tcpSpan(b)
	if !ok || off != 20 || seq != 0xfffffff0 || end != 0x2c {
		t.Fatalf("v4: %d %#x %#x %v", off, seq, end, ok)
	}
	frag := append([]byte(nil), b...)
	frag[6] = 0x20 // MF
	if _, _, _, ok := tcpSpan(frag); ok {
		t.Fatal("a fragment parsed as a segment")
	}
	v6 := ipv6(100)
	v6[6] = 6
	binary.BigEndian.PutUint32(v6[44:48], 7)
	v6[52] = 8 << 4 // 32-byte TCP header
	if off, seq, end, ok := tcpSpan(v6); !ok || off != 40 || seq != 7 || end != 7+100-40-32 {
		t.Fatalf("v6: %d %d %d %v", off, seq, end, ok)
	}
	for _, bad := range [][]byte{b[:30], ipv6(50), {0x45}, udp4(100, 1, 64, 0)} {
		if _, _, _, ok := tcpSpan(bad); ok {
			t.Fatalf("parsed %x", bad)
		}
	}
}

// Pings of one size in a row (a reader that was stopped hands them over in
// one batch) leave one datagram each, as the collector saw them before.
func TestTunnelGSONotForPings(t *testing.T) {
	var k gsoKernel
	tu := fakeTunnel(t, "vxlan", k.fn, "10.77.4.2:4789")
	tu.gso.Store(true)
	var batch []*packet.Packet
	for range 20 {
		batch = append(batch, packet.New(icmp4Echo()))
	}
	if n, err := tu.Send(batch); n != 20 || err != nil {
		t.Fatalf("sent %d: %v", n, err)
	}
	if k.gsoMsgs != 0 || k.msgs != 20 || len(k.dgrams) != 20 {
		t.Fatalf("%d messages (%d GSO), %d datagrams", k.msgs, k.gsoMsgs, len(k.dgrams))
	}
}

// gsoKernel is a fake sendmmsg that does what the kernel does with a
// message: its iovecs back to back, cut at the UDP_SEGMENT size when there
// is one (checking the rules the kernel checks), into datagrams. fail, if
// set, decides the error of a message (by its segment size, 0: none, and
// its first datagram).
type gsoKernel struct {
	mu       sync.Mutex
	calls    int
	msgs     int
	gsoMsgs  int
	dgrams   []string // fd, destination, bytes
	fail     func(size int, first []byte) error
	failures int
}

func (k *gsoKernel) fn(fd int, hdrs []unix.Mmsghdr) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	for i := range hdrs {
		h := &hdrs[i].Hdr
		iovs := unsafe.Slice(h.Iov, h.Iovlen)
		var data []byte
		for _, v := range iovs {
			data = append(data, unsafe.Slice(v.Base, v.Len)...)
		}
		size := 0
		if h.Controllen > 0 {
			cm, err := unix.ParseSocketControlMessage(unsafe.Slice(h.Control, h.Controllen))
			if err != nil || len(cm) != 1 || cm[0].Header.Level != unix.SOL_UDP || cm[0].Header.Type != unix.UDP_SEGMENT || len(cm[0].Data) != 2 {
				panic(fmt.Sprintf("control message %v %v", cm, err))
			}
			size = int(binary.NativeEndian.Uint16(cm[0].Data))
			if size == 0 || len(data) > size*udpMaxSegments || len(data) > udpGSOMaxBytes {
				panic(fmt.Sprintf("GSO message of %d bytes, segments of %d", len(data), size))
			}
			// Every iovec is one datagram of the copy: all of the segment
			// size but the last.
			for j, v := range iovs {
				if int(v.Len) > size || (int(v.Len) < size && j != len(iovs)-1) {
					panic(fmt.Sprintf("iovec %d of %d bytes in a run of %d", j, v.Len, size))
				}
			}
		}
		first := data
		if size > 0 && len(first) > size {
			first = first[:size]
		}
		if k.fail != nil {
			if err := k.fail(size, first); err != nil {
				k.failures++
				if i == 0 {
					return -1, err
				}
				return i, nil
			}
		}
		k.msgs++
		if size > 0 {
			k.gsoMsgs++
		} else {
			size = len(data)
		}
		name := unsafe.Slice(h.Name, h.Namelen)
		for off := 0; off < len(data); off += size {
			end := min(off+size, len(data))
			k.dgrams = append(k.dgrams, fmt.Sprintf("%d %x %x", fd, name, data[off:end]))
		}
		hdrs[i].Len = uint32(len(data))
	}
	return len(hdrs), nil
}

// gsoBatch: copies of TCP super-packets of four flows (v4), cut by Wire,
// between small packets and IPv6 ones.
func gsoBatch(t testing.TB) []*packet.Packet {
	var b []*packet.Packet
	for i := range 6 {
		sp := tcpSuper(t, 20000+i*7000)
		binary.BigEndian.PutUint16(sp[20:22], uint16(40000+i%4)) // flow
		b = append(b, packet.New(sp), packet.New(flowPkt4(i)))
		if i%2 == 0 {
			d := ipv6(300)
			binary.BigEndian.PutUint16(d[40:42], uint16(i))
			b = append(b, packet.New(d))
		}
	}
	return b
}

// sendThroughWire sends gsoBatch through Wire (MTU 1450) and a Tunnel on
// k, GSO on or off; it returns the Tunnel.
func sendThroughWire(t *testing.T, k *gsoKernel, gso bool) (*Tunnel, []*packet.Packet) {
	tu := fakeTunnel(t, "vxlan", k.fn, "10.77.4.2:4789", "10.77.4.3:4789", "[fd77:4::2]:0")
	tu.gso.Store(gso)
	w := NewWire(tu, 1450)
	batch := gsoBatch(t)
	n, err := w.Send(batch)
	if n != len(batch) || err != nil {
		t.Fatalf("gso %v: sent %d of %d: %v", gso, n, len(batch), err)
	}
	return tu, batch
}

func TestTunnelGSOSameDatagrams(t *testing.T) {
	var each, gso gsoKernel
	te, _ := sendThroughWire(t, &each, false)
	tg, batch := sendThroughWire(t, &gso, true)
	if len(gso.dgrams) != len(each.dgrams) || len(each.dgrams) < 100 {
		t.Fatalf("%d datagrams with GSO, %d without", len(gso.dgrams), len(each.dgrams))
	}
	for i := range each.dgrams {
		if gso.dgrams[i] != each.dgrams[i] {
			t.Fatalf("datagram %d differs:\n%s\n%s", i, gso.dgrams[i], each.dgrams[i])
		}
	}
	if gso.gsoMsgs == 0 || gso.msgs >= each.msgs/4 {
		t.Fatalf("GSO: %d messages (%d GSO) for %d datagrams", gso.msgs, gso.gsoMsgs, len(gso.dgrams))
	}
	if gso.calls != each.calls {
		t.Errorf("%d sendmmsg calls with GSO, %d without", gso.calls, each.calls)
	}
	se, sg := te.Stats(), tg.Stats()
	if se != sg || sg.Sent != uint64(len(gso.dgrams)) || sg.Errors != 0 {
		t.Fatalf("stats %+v with GSO, %+v without", sg, se)
	}
	if !tg.gso.Load() {
		t.Fatal("GSO turned off")
	}
	for _, p := range batch {
		p.Release()
	}
}

func TestTunnelGSOFallback(t *testing.T) {
	for _, e := range []error{unix.EINVAL, unix.EMSGSIZE, unix.EIO} {
		var each gsoKernel
		sendThroughWire(t, &each, false)
		k := gsoKernel{fail: func(size int, _ []byte) error {
			if size > 0 {
				return e
			}
			return nil
		}}
		tu, batch := sendThroughWire(t, &k, true)
		if tu.gso.Load() {
			t.Fatalf("%v: GSO still on", e)
		}
		if k.failures != 1 || k.gsoMsgs != 0 {
			t.Fatalf("%v: %d refused messages, %d GSO messages sent", e, k.failures, k.gsoMsgs)
		}
		if fmt.Sprint(k.dgrams) != fmt.Sprint(each.dgrams) {
			t.Fatalf("%v: datagrams differ from those of the path without GSO", e)
		}
		if s := tu.Stats(); s.Sent != uint64(len(each.dgrams)) || s.Errors != 0 {
			t.Fatalf("%v: stats %+v", e, s)
		}
		// Later sends: no GSO, no refusal.
		k.dgrams = nil
		w := NewWire(tu, 1450)
		if n, err := w.Send(batch); n != len(batch) || err != nil || k.failures != 1 || fmt.Sprint(k.dgrams) != fmt.Sprint(each.dgrams) {
			t.Fatalf("%v: second send %d %v, %d refusals", e, n, err, k.failures)
		}
	}
}

func TestTunnelGSORunError(t *testing.T) {
	// The kernel refuses the runs of one remote (no route): their copies
	// fail one by one, the rest go; GSO stays on.
	unreach := func(first []byte) bool {
		// inner IPv4 destination behind the VXLAN and Ethernet headers
		return len(first) > 22+20 && first[22]>>4 == 4 && binary.BigEndian.Uint16(first[22+20:22+22]) == 40001
	}
	k := gsoKernel{fail: func(_ int, first []byte) error {
		if unreach(first) {
			return unix.ENETUNREACH
		}
		return nil
	}}
	tu := fakeTunnel(t, "vxlan", k.fn, "10.77.4.2:4789")
	tu.gso.Store(true)
	w := NewWire(tu, 1450)
	batch := gsoBatch(t)
	n, err := w.Send(batch)
	if !errors.Is(err, unix.ENETUNREACH) || !tu.gso.Load() {
		t.Fatalf("err %v, gso %v", err, tu.gso.Load())
	}
	bad := 0
	for _, p := range batch {
		if binary.BigEndian.Uint16(p.Data[20:22]) == 40001 && len(p.Data) > 1450 {
			if p.Errs == 0 {
				t.Fatal("copy of the unreachable flow counted as sent")
			}
			bad++
		} else if p.Errs != 0 {
			t.Fatalf("copy %x... failed", p.Data[:24])
		}
	}
	if bad == 0 || n != len(batch)-bad {
		t.Fatalf("sent %d of %d, %d failed", n, len(batch), bad)
	}
	s := tu.Stats()
	if s.Errors == 0 || s.Sent == 0 || k.gsoMsgs == 0 {
		t.Fatalf("stats %+v, %d GSO messages", s, k.gsoMsgs)
	}
}

func TestTunnelGSOAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	tu := fakeTunnel(t, "vxlan", nopSend, "10.77.4.2:4789", "10.77.4.3:4789", "[fd77:4::2]:4789")
	tu.gso.Store(true)
	w := NewWire(tu, 1450)
	batch := gsoBatch(t)
	w.Send(batch)
	if a := testing.AllocsPerRun(100, func() { w.Send(batch) }); a > 0 {
		t.Errorf("Wire+Tunnel.Send with GSO allocates %.1f per batch", a)
	}
}

// BenchmarkTunnelWireBuild: Wire cutting TCP super-packets and the Tunnel
// building its messages, GSO or not, the syscall faked. One op = one 64 KiB
// super-packet.
func BenchmarkTunnelWireBuild(b *testing.B) {
	for _, gso := range []bool{false, true} {
		name := "each"
		if gso {
			name = "gso"
		}
		b.Run(name, func(b *testing.B) {
			tu := fakeTunnel(b, "vxlan", nopSend, "10.77.4.2:4789")
			tu.gso.Store(gso)
			w := NewWire(tu, 1450)
			batch := make([]*packet.Packet, 4)
			for i := range batch {
				sp := tcpSuper(b, 65000)
				binary.BigEndian.PutUint16(sp[20:22], uint16(40000+i))
				batch[i] = packet.New(sp)
			}
			b.SetBytes(65000)
			b.ReportAllocs()
			for i := 0; i < b.N; i += len(batch) {
				w.Send(batch)
			}
		})
	}
}
