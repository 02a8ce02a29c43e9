package sink

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// Flow hashing and the choice of a collector.
//
// FlowHash hashes the inner 5-tuple of a copy, the same both ways; the
// Tunnel sink uses it for the outer UDP source port (receivers spread flows over cores by it, as
// RFC 7348 §5 and RFC 8926 §3.3 recommend) and, through Rendezvous, to
// choose among several collectors so that a flow always goes to the same
// one.

// mix32 is murmur3's 32-bit finalizer: every input bit affects every
// output bit.
func mix32(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// add folds one 32-bit word into a running hash (murmur3's body step).
func add(h, k uint32) uint32 {
	k *= 0xcc9e2d51
	k = k<<15 | k>>17
	k *= 0x1b873593
	h ^= k
	h = h<<13 | h>>19
	return h*5 + 0xe6546b64
}

func addBytes(h uint32, b []byte) uint32 {
	for len(b) >= 4 {
		h = add(h, binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) > 0 {
		var k uint32
		for _, c := range b {
			k = k<<8 | uint32(c)
		}
		h = add(h, k)
	}
	return h
}

const flowSeed = 0x4e43f10a

func hasPorts(proto byte) bool {
	return proto == 6 || proto == 17 || proto == 132 // TCP, UDP, SCTP
}

// FlowHash returns a hash of the flow of an IP packet: addresses, protocol
// and, for TCP/UDP/SCTP packets that are not fragments, the ports. It is
// symmetric, as a Gateway Load Balancer's flow hash is: the two directions
// of a connection hash alike (the endpoints are put in order before they
// are hashed), so both go to the same collector and leave from the same
// outer source port. IPv6 extension headers (hop-by-hop, routing, fragment,
// destination options) are skipped to find the transport protocol; every
// fragment (first or not) hashes without ports so that all fragments of a
// packet stay together. A packet too short or not IPv4/IPv6 hashes its
// first bytes. It never allocates.
func FlowHash(ip []byte) uint32 {
	h := uint32(flowSeed)
	if len(ip) == 0 {
		return mix32(h)
	}
	switch ip[0] >> 4 {
	case 4:
		ihl := int(ip[0]&0x0f) * 4
		if len(ip) < 20 || ihl < 20 {
			break
		}
		proto := ip[9]
		var ports uint32
		frag := binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 // MF or offset
		if !frag && hasPorts(proto) && len(ip) >= ihl+4 {
			ports = binary.BigEndian.Uint32(ip[ihl : ihl+4])
		}
		return mix32(endpoints(add(h, uint32(proto)|4<<8), ip[12:16], ip[16:20], ports))
	case 6:
		if len(ip) < 40 {
			break
		}
		proto := ip[6]
		off := 40
		frag := false
	ext:
		for i := 0; i < 8; i++ {
			switch proto {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(ip) < off+8 {
					break ext
				}
				proto = ip[off]
				off += (int(ip[off+1]) + 1) * 8
			case 44: // fragment
				if len(ip) < off+8 {
					break ext
				}
				proto = ip[off]
				frag = true
				off += 8
			default:
				break ext
			}
		}
		var ports uint32
		if !frag && hasPorts(proto) && len(ip) >= off+4 {
			ports = binary.BigEndian.Uint32(ip[off : off+4])
		}
		return mix32(endpoints(add(h, uint32(proto)|6<<8), ip[8:24], ip[24:40], ports))
	}
	n := len(ip)
	if n > 40 {
		n = 40
	}
	return mix32(addBytes(h^0xffff, ip[:n]))
}

// endpoints folds the two endpoints of a flow (addresses of equal length
// and the source and destination ports packed as src<<16|dst) into h in a
// fixed order — the lower (address, port) first — so that both directions
// give the same hash.
func endpoints(h uint32, src, dst []byte, ports uint32) uint32 {
	sp, dp := ports>>16, ports&0xffff
	c := bytes.Compare(src, dst)
	if c > 0 || (c == 0 && sp > dp) {
		src, dst, sp, dp = dst, src, dp, sp
	}
	h = addBytes(h, src)
	h = addBytes(h, dst)
	return add(h, sp<<16|dp)
}

// remoteKey hashes a collector address (the same address and port always
// give the same key).
func remoteKey(r netip.AddrPort) uint32 {
	a := r.Addr().Unmap().As16()
	h := addBytes(0x9747b28c, a[:])
	return mix32(add(h, uint32(r.Port())))
}

// hrwScore is the rendezvous score of a flow for a collector key.
func hrwScore(flow, key uint32) uint32 {
	return mix32(add(add(0x1b873593, flow), key))
}

// PickRemote chooses one of remotes for a flow by rendezvous (highest
// random weight) hashing: every remote gets a pseudo-random score for the
// flow and the highest wins. A flow therefore always goes to the same
// remote, flows spread evenly, and removing a remote moves only the flows
// that were on it (adding one moves only the flows it wins). The choice
// depends on the set of remotes, not on their order. It returns -1 for an
// empty list. Rendezvous precomputes the keys for repeated use.
func PickRemote(flow uint32, remotes []netip.AddrPort) int {
	best, bestScore := -1, uint32(0)
	for i, r := range remotes {
		s := hrwScore(flow, remoteKey(r))
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// Rendezvous is PickRemote with the remotes' keys computed once.
type Rendezvous struct {
	keys []uint32
}

// NewRendezvous precomputes the keys of remotes.
func NewRendezvous(remotes []netip.AddrPort) *Rendezvous {
	r := &Rendezvous{keys: make([]uint32, len(remotes))}
	for i, a := range remotes {
		r.keys[i] = remoteKey(a)
	}
	return r
}

// Pick returns the index of the remote the flow goes to (as PickRemote), or
// -1 if there are none.
func (r *Rendezvous) Pick(flow uint32) int {
	switch len(r.keys) {
	case 0:
		return -1
	case 1:
		return 0
	}
	best, bestScore := -1, uint32(0)
	for i, k := range r.keys {
		s := hrwScore(flow, k)
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
