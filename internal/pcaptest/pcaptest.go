// Package pcaptest reads pcap and pcapng captures back in tests, with
// gopacket's readers (an implementation other than the one under test).
package pcaptest

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Record is one captured packet: its bytes and its original length.
type Record struct {
	Data    []byte
	OrigLen int
}

// Read reads every record of a pcap or pcapng stream (told apart by the
// first four bytes); a bad record fails the test.
func Read(t testing.TB, r io.Reader) (layers.LinkType, []Record) {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var rd interface {
		gopacket.PacketDataSource
		LinkType() layers.LinkType
	}
	if len(b) >= 4 && bytes.Equal(b[:4], []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		rd, err = pcapgo.NewNgReader(bytes.NewReader(b), pcapgo.DefaultNgReaderOptions)
	} else {
		rd, err = pcapgo.NewReader(bytes.NewReader(b))
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for {
		d, ci, err := rd.ReadPacketData()
		if err == io.EOF {
			return rd.LinkType(), out
		}
		if err != nil {
			t.Fatalf("record %d: %v", len(out), err)
		}
		out = append(out, Record{d, ci.Length})
	}
}

// ReadFile is Read of the file at path.
func ReadFile(t testing.TB, path string) (layers.LinkType, []Record) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Read(t, f)
}
