package sink

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// VLANTagLen is the length of an 802.1Q tag (TPID 0x8100 and the TCI).
const VLANTagLen = 4

// PutEthernetVLAN writes an Ethernet header with an 802.1Q tag into h[:18]:
// dst, src, 0x8100, the TCI (priority 0, DEI 0, the 12-bit VLAN id), then
// the ethertype of the payload.
func PutEthernetVLAN(h []byte, dst, src [6]byte, vlan uint16, ethertype uint16) {
	_ = h[EthHdrLen+VLANTagLen-1]
	copy(h[0:6], dst[:])
	copy(h[6:12], src[:])
	binary.BigEndian.PutUint16(h[12:14], unix.ETH_P_8021Q)
	binary.BigEndian.PutUint16(h[14:16], vlan&0x0fff)
	binary.BigEndian.PutUint16(h[16:18], ethertype)
}

// setVLAN makes every frame tagged with vlan; the packet socket is told
// the frames are 802.1Q (sll_protocol), which is what they are on the wire.
func (d *Device) setVLAN(vlan uint16) {
	d.vlan = vlan
	d.setDst(d.to.Load().dst)
}
