package sink

import (
	"bytes"
	"net"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestDeviceVLANFrames(t *testing.T) {
	fs := &fakeSend{}
	d := newDevice("dev", 7, 3, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 1}, fs.fn, nil)
	d.setVLAN(100)
	v4, v6 := ipv4(60, [4]byte{10, 77, 2, 2}), ipv6(80)
	batch := pkts(v4, v6)
	if n, err := d.Send(batch); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	for i, want := range [][]byte{v4, v6} {
		f := fs.got[i]
		et := uint16(unix.ETH_P_IP)
		if i == 1 {
			et = unix.ETH_P_IPV6
		}
		hdr := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00, 0x64, byte(et >> 8), byte(et)}
		if !bytes.Equal(f[:18], hdr) || !bytes.Equal(f[18:], want) {
			t.Fatalf("frame %d: %x", i, f)
		}
		sa := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&fs.names[i][0]))
		if sa.Protocol != htons(unix.ETH_P_8021Q) {
			t.Fatalf("sll_protocol %#x (network order)", sa.Protocol)
		}
	}
	if d.AcceptsGSO() {
		t.Fatal("tagged frames must not go out as GSO packets")
	}
	for _, p := range batch {
		p.Release()
	}
}
