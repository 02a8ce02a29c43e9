package sink

import (
	"bytes"
	"github.com/nfclone/nfclone/packet"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"
)

// Two reading clients get every record while a third never reads: its
// records are dropped and counted for it alone, Send never blocks.
func TestPcapOverIPSlowClient(t *testing.T) {
	for _, format := range []string{"pcap", "pcapng"} {
		t.Run(format, func(t *testing.T) {
			s, err := NewPcapOverIP(PcapOverIPConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Format: format, ClientBuffer: 256 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const n = 64 * 313
			type result struct {
				count atomic.Int64
				err   error
				first []byte
			}
			results := make([]result, 2)
			var wg sync.WaitGroup
			for i := range results {
				conn, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				wg.Add(1)
				go func() {
					defer wg.Done()
					var next func() ([]byte, error)
					if format == "pcapng" {
						r, err := pcapgo.NewNgReader(conn, pcapgo.DefaultNgReaderOptions)
						if err != nil {
							results[i].err = err
							return
						}
						next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
					} else {
						r, err := pcapgo.NewReader(conn)
						if err != nil {
							results[i].err = err
							return
						}
						next = func() ([]byte, error) { d, _, err := r.ReadPacketData(); return d, err }
					}
					for results[i].count.Load() < n {
						d, err := next()
						if err != nil {
							results[i].err = err
							return
						}
						if results[i].count.Load() == 0 {
							results[i].first = append([]byte(nil), d...)
						}
						results[i].count.Add(1)
					}
				}()
			}
			// The stalled client: connected, never reads.
			stalled, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer stalled.Close()
			deadline := time.Now().Add(5 * time.Second)
			for len(s.Clients()) < 3 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if len(s.Clients()) != 3 {
				t.Fatalf("%d clients", len(s.Clients()))
			}
			data := ipv4(1000, [4]byte{10, 77, 2, 2})
			for sent := 0; sent < n; sent += 64 {
				batch := make([]*packet.Packet, 64)
				for j := range batch {
					batch[j] = packet.New(data)
				}
				if k, err := s.Send(batch); k != 64 || err != nil {
					t.Fatal(k, err)
				}
				for _, p := range batch {
					p.Release()
				}
				// The readers keep up (they are waited for); the stalled
				// client cannot.
				for i := range results {
					for results[i].count.Load() < int64(sent+64) && time.Now().Before(deadline.Add(10*time.Second)) {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("readers did not get every record")
			}
			for i := range results {
				r := &results[i]
				if r.count.Load() != n || (r.err != nil && r.err != io.EOF) || !bytes.Equal(r.first, data) {
					t.Fatalf("client %d: %d records, %v", i, r.count.Load(), r.err)
				}
			}
			cs := s.Clients()
			var stalledStats PcapClientStats
			for _, c := range cs {
				if c.Remote == stalled.LocalAddr().String() {
					stalledStats = c
				}
			}
			if stalledStats.Dropped == 0 || stalledStats.Sent+stalledStats.Dropped != n {
				t.Fatalf("stalled client: %+v", stalledStats)
			}
			if st := s.Stats(); st.Sent != n {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// tshark reads both stream formats as a client receives them.
func TestPcapOverIPTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	for _, format := range []string{"pcap", "pcapng"} {
		s, err := NewPcapOverIP(PcapOverIPConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Format: format})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); len(s.Clients()) < 1 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		batch := pkts(ipv4(61, [4]byte{10, 77, 2, 2}), ipv6(83))
		batch[0].Time = time.Unix(1700000002, 250000000).UnixNano() // the kernel's time of the packet
		if n, err := s.Send(batch); n != 2 || err != nil {
			t.Fatal(n, err)
		}
		for _, p := range batch {
			p.Release()
		}
		s.Close() // the client reads the stream to its end
		b, err := io.ReadAll(conn)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "stream")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("tshark", "-r", path, "-n", "-T", "fields", "-E", "separator=|",
			"-e", "frame.len", "-e", "ip.dst", "-e", "ipv6.dst", "-e", "frame.time_epoch").Output()
		if err != nil {
			t.Fatalf("%s: tshark: %v\n%s", format, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 || lines[0] != "61|10.77.2.2||1700000002.250000000" || !strings.HasPrefix(lines[1], "83||fd77::2|") {
			t.Errorf("%s: tshark reads\n%s", format, out)
		}
	}
}

func TestPcapOverIPSendNoAlloc(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	s, err := NewPcapOverIP(PcapOverIPConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Format: "pcapng"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn)
	for deadline := time.Now().Add(5 * time.Second); len(s.Clients()) < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	batch := pkts(ipv4(1500, [4]byte{10, 0, 0, 1}), ipv6(1501))
	s.Send(batch)
	if n := testing.AllocsPerRun(100, func() { s.Send(batch) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}

// An annotated pcapng stream: tshark reads each record's interface (named
// in the stream's header), direction and comment, as from an annotated
// file.
func TestPcapOverIPAnnotated(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	s, err := NewPcapOverIP(PcapOverIPConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Format: "pcapng",
		Annotate: &PcapAnnotation{Session: "ids", Names: map[uint32]string{2: "e0", 4: "e2"}, Rules: []int{100, 200}}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(s.Clients()) < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	batch := pkts(ipv4(61, [4]byte{10, 77, 2, 2}), ipv4(62, [4]byte{10, 77, 2, 3}))
	batch[0].Dir, batch[0].InIf, batch[0].Rule = packet.DirIngress, 2, 2
	batch[1].Dir, batch[1].OutIf, batch[1].UID, batch[1].GID, batch[1].HasUID = packet.DirEgress, 4, 1000, 100, true
	if n, err := s.Send(batch); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	for _, p := range batch {
		p.Release()
	}
	s.Close()
	b, err := io.ReadAll(conn)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "stream.pcapng")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tshark", "-r", path, "-n", "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "frame.packet_flags_direction", "-e", "frame.comment", "-e", "ip.dst").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	want := "e0|0x00000001|session=ids rule=200 dir=ingress|10.77.2.2\ne2|0x00000002|session=ids dir=egress uid=1000 gid=100|10.77.2.3"
	if got := strings.TrimSpace(string(out)); got != want {
		t.Fatalf("tshark reads\n%s\nwant\n%s", got, want)
	}
}
