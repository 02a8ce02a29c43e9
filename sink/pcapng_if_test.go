package sink

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/nfclone/nfclone/nfq"
)

// pcapng with Interfaces: each copy is recorded on the interface it was
// seen on (lo is ifindex 1 in every namespace; a gone index by number), in
// its direction; an odd length exercises the padding.
func TestPcapngInterfaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "if.pcapng")
	s, err := NewPcap(PcapConfig{PcapWriterConfig: PcapWriterConfig{Path: path, Format: "pcapng", Interfaces: true}})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := nfq.NewPacket(icmp4Echo()), nfq.NewPacket(udp6(61, 64, 0x66)), nfq.NewPacket(udp4(63, 1, 64, 0x44))
	a.InIf = 1                // inbound on lo
	b.InIf, b.OutIf = 1, 9999 // forwarded: outbound on the gone 9999
	c.InIf = 9999             // inbound on 9999
	batch := []*nfq.Packet{a, b, c}
	if n, err := s.Send(batch); n != 3 || err != nil {
		t.Fatalf("send %d %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		intf string
		dir  pcapgo.NgEpbFlag
	}
	want := []rec{{"lo", pcapgo.NgEpbFlagDirectionInbound}, {"if9999", pcapgo.NgEpbFlagDirectionOutbound}, {"if9999", pcapgo.NgEpbFlagDirectionInbound}}
	for i, w := range want {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		intf, err := r.Interface(ci.InterfaceIndex)
		if err != nil || opts.Flags == nil {
			t.Fatalf("record %d: interface %d %v, flags %v", i, ci.InterfaceIndex, err, opts.Flags)
		}
		if intf.Name != w.intf || opts.Flags.Direction != w.dir || !bytes.Equal(data, batch[i].Data) {
			t.Fatalf("record %d: on %q direction %v, want %q %v (data equal: %v)", i, intf.Name, opts.Flags.Direction, w.intf, w.dir, bytes.Equal(data, batch[i].Data))
		}
	}
	if r.NInterfaces() != 3 { // nfclone (the writer's own), lo, if9999
		t.Fatalf("%d interfaces, want 3", r.NInterfaces())
	}
	if _, err := exec.LookPath("tshark"); err == nil {
		out, err := exec.Command("tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.packet_flags_direction").Output()
		if err != nil {
			t.Fatalf("tshark: %v", err)
		}
		if got := strings.Join(strings.Fields(string(out)), " "); got != "lo 0x00000001 if9999 0x00000002 if9999 0x00000001" {
			t.Fatalf("tshark reads %q", got)
		}
	}
	for _, p := range batch {
		p.Release()
	}
}
