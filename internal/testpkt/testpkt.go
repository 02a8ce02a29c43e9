// Package testpkt builds the IP packets unit tests feed to readers and
// queues. Only tests import it.
package testpkt

import "encoding/binary"

// IPv4 returns an IPv4/UDP packet of total length n (>= 28) from
// 10.77.0.1 to dst: TTL 64, a zero header checksum and UDP header, and a
// payload whose byte i is byte(i).
func IPv4(n int, dst [4]byte) []byte {
	b := make([]byte, n)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	b[8] = 64
	b[9] = 17
	copy(b[12:16], []byte{10, 77, 0, 1})
	copy(b[16:20], dst[:])
	for i := 28; i < n; i++ {
		b[i] = byte(i)
	}
	return b
}
