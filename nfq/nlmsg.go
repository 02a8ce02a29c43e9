package nfq

import (
	"encoding/binary"
	"errors"
)

// nfnetlink wire constants (include/uapi/linux/netfilter/nfnetlink*.h).
const (
	nlmsgHdrLen = 16
	nfgenLen    = 4
	nlaHdrLen   = 4
	nlaTypeMask = 0x3fff

	nlmsgNoop    = 1
	nlmsgError   = 2
	nlmsgDone    = 3
	nlmsgOverrun = 4

	nlmFRequest = 0x1
	nlmFMulti   = 0x2
	nlmFAck     = 0x4

	subsysQueue = 3
	subsysUlog  = 4

	// NFQUEUE message types
	nfqnlMsgPacket       = 0
	nfqnlMsgVerdict      = 1
	nfqnlMsgConfig       = 2
	nfqnlMsgVerdictBatch = 3

	// NFQUEUE attributes
	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2
	nfqaMark       = 3
	nfqaTimestamp  = 4
	nfqaIfIndexIn  = 5
	nfqaIfIndexOut = 6
	nfqaHwAddr     = 9
	nfqaPayload    = 10
	nfqaCapLen     = 13
	nfqaSkbInfo    = 14

	// NFQA_SKB_INFO flags
	skbCsumNotReady = 1 << 0
	skbGSO          = 1 << 1

	// NFQUEUE config attributes
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxLen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5

	nfqnlCfgCmdBind   = 1
	nfqnlCfgCmdUnbind = 2
	nfqnlCopyPacket   = 2

	// NFQA_CFG_F_GSO: GSO packets are queued whole; NFQA_CFG_F_FAIL_OPEN:
	// a packet the queue cannot take is accepted (Route readers only, see
	// QueueReader.bind).
	cfgFlagGSO      = 0x04
	cfgFlagFailOpen = 0x01

	// NFLOG message types and attributes
	nfulnlMsgPacket = 0
	nfulnlMsgConfig = 1

	nfulaPacketHdr  = 1
	nfulaMark       = 2
	nfulaTimestamp  = 3
	nfulaIfIndexIn  = 4
	nfulaIfIndexOut = 5
	nfulaHwAddr     = 8
	nfulaPayload    = 9
	nfulaSeq        = 12
	nfulaUID        = 11
	nfulaGID        = 14

	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgNlBufSiz = 3
	nfulaCfgTimeout  = 4
	nfulaCfgQThresh  = 5
	nfulaCfgFlags    = 6

	nfulnlCfgCmdBind   = 1
	nfulnlCfgCmdUnbind = 2
	nfulnlCopyPacket   = 2
	nfulnlCfgFSeq      = 0x1

	nfDrop   = 0
	nfAccept = 1
)

var (
	errShort     = errors.New("nfq: truncated netlink message")
	errBadAttr   = errors.New("nfq: malformed netlink attribute")
	errNoPktHdr  = errors.New("nfq: packet message without packet header")
	errNoPayload = errors.New("nfq: packet message without payload")
)

var ne = binary.NativeEndian

func nlAlign(n int) int { return (n + 3) &^ 3 }

// nlMsg is one netlink message in a receive buffer (no copy).
type nlMsg struct {
	typ   uint16
	flags uint16
	seq   uint32
	body  []byte // after the nlmsghdr
}

// nextMsg splits the first netlink message off b. A malformed header ends
// the datagram: rest is nil and err is set.
func nextMsg(b []byte) (m nlMsg, rest []byte, err error) {
	if len(b) < nlmsgHdrLen {
		return m, nil, errShort
	}
	l := int(ne.Uint32(b[0:4]))
	if l < nlmsgHdrLen || l > len(b) {
		return m, nil, errShort
	}
	m.typ = ne.Uint16(b[4:6])
	m.flags = ne.Uint16(b[6:8])
	m.seq = ne.Uint32(b[8:12])
	m.body = b[nlmsgHdrLen:l]
	al := nlAlign(l)
	if al >= len(b) {
		return m, b[len(b):], nil
	}
	return m, b[al:], nil
}

// nextAttr splits the first netlink attribute off b.
func nextAttr(b []byte) (typ uint16, val, rest []byte, err error) {
	if len(b) < nlaHdrLen {
		return 0, nil, nil, errBadAttr
	}
	l := int(ne.Uint16(b[0:2]))
	if l < nlaHdrLen || l > len(b) {
		return 0, nil, nil, errBadAttr
	}
	typ = ne.Uint16(b[2:4]) & nlaTypeMask
	val = b[nlaHdrLen:l]
	al := nlAlign(l)
	if al >= len(b) {
		return typ, val, b[len(b):], nil
	}
	return typ, val, b[al:], nil
}

// pktInfo is what a packet message says, parsed in place.
type pktInfo struct {
	id      uint32
	seq     uint32
	hasID   bool
	hasSeq  bool
	payload []byte
	capLen  uint32 // original length if the kernel truncated (NFQA_CAP_LEN)
	skbInfo uint32 // NFQA_SKB_INFO flags
	hasInfo bool
	inIf    uint32
	outIf   uint32
	mark    uint32
	hw      [8]byte
	hwLen   uint8
	// ts is the kernel's timestamp of the packet (NFQA_TIMESTAMP,
	// NFULA_TIMESTAMP: skb->tstamp) in nanoseconds, 0 if it gave none.
	ts int64
	// hook is the netfilter hook (NFULA_PACKET_HDR, NFQA_PACKET_HDR;
	// hasHook says it came).
	hook    uint8
	hasHook bool
	// uid, gid of the packet's local socket (NFULA_UID/GID, hasUID).
	uid, gid uint32
	hasUID   bool
}

// parseTimestamp reads struct nfqnl_msg_packet_timestamp /
// nfulnl_msg_packet_timestamp: __be64 sec; __be64 usec.
func parseTimestamp(val []byte) int64 {
	if len(val) < 16 {
		return 0
	}
	sec, usec := binary.BigEndian.Uint64(val[0:8]), binary.BigEndian.Uint64(val[8:16])
	if sec > 1<<33 || usec >= 1e6 {
		return 0 // not a time this reader can use
	}
	return int64(sec)*1e9 + int64(usec)*1e3
}

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func parseHw(val []byte, pi *pktInfo) {
	// struct nfqnl_msg_packet_hw / nfulnl_msg_packet_hw:
	// __be16 hw_addrlen; __u16 pad; __u8 hw_addr[8]
	if len(val) < 12 {
		return
	}
	n := int(binary.BigEndian.Uint16(val[0:2]))
	if n > 8 {
		n = 8
	}
	copy(pi.hw[:], val[4:4+n])
	pi.hwLen = uint8(n)
}

// parseQueuePacket parses the body of an NFQNL_MSG_PACKET message.
func parseQueuePacket(body []byte, pi *pktInfo) error {
	*pi = pktInfo{}
	if len(body) < nfgenLen {
		return errShort
	}
	b := body[nfgenLen:]
	for len(b) > 0 {
		typ, val, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case nfqaPacketHdr:
			// struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
			if len(val) < 4 {
				return errBadAttr
			}
			pi.id = be32(val)
			pi.hasID = true
			if len(val) >= 7 {
				pi.hook, pi.hasHook = val[6], true
			}
		case nfqaPayload:
			pi.payload = val
		case nfqaCapLen:
			if len(val) >= 4 {
				pi.capLen = be32(val)
			}
		case nfqaSkbInfo:
			if len(val) >= 4 {
				pi.skbInfo, pi.hasInfo = be32(val), true
			}
		case nfqaIfIndexIn:
			if len(val) >= 4 {
				pi.inIf = be32(val)
			}
		case nfqaIfIndexOut:
			if len(val) >= 4 {
				pi.outIf = be32(val)
			}
		case nfqaMark:
			if len(val) >= 4 {
				pi.mark = be32(val)
			}
		case nfqaHwAddr:
			parseHw(val, pi)
		case nfqaTimestamp:
			pi.ts = parseTimestamp(val)
		}
	}
	if !pi.hasID {
		return errNoPktHdr
	}
	if pi.payload == nil {
		return errNoPayload
	}
	return nil
}

// parseLogPacket parses the body of an NFULNL_MSG_PACKET message.
func parseLogPacket(body []byte, pi *pktInfo) error {
	*pi = pktInfo{}
	if len(body) < nfgenLen {
		return errShort
	}
	b := body[nfgenLen:]
	for len(b) > 0 {
		typ, val, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case nfulaPayload:
			pi.payload = val
		case nfulaSeq:
			if len(val) >= 4 {
				pi.seq = be32(val)
				pi.hasSeq = true
			}
		case nfulaIfIndexIn:
			if len(val) >= 4 {
				pi.inIf = be32(val)
			}
		case nfulaIfIndexOut:
			if len(val) >= 4 {
				pi.outIf = be32(val)
			}
		case nfulaMark:
			if len(val) >= 4 {
				pi.mark = be32(val)
			}
		case nfulaHwAddr:
			parseHw(val, pi)
		case nfulaTimestamp:
			pi.ts = parseTimestamp(val)
		case nfulaPacketHdr:
			// struct nfulnl_msg_packet_hdr { __be16 hw_protocol; __u8 hook; __u8 _pad; }
			if len(val) >= 3 {
				pi.hook, pi.hasHook = val[2], true
			}
		case nfulaUID:
			if len(val) >= 4 {
				pi.uid, pi.hasUID = be32(val), true
			}
		case nfulaGID:
			if len(val) >= 4 {
				pi.gid = be32(val)
			}
		}
	}
	if pi.payload == nil {
		return errNoPayload
	}
	return nil
}

// parseAck parses an NLMSG_ERROR body: the (negative) errno, 0 for an ACK.
func parseAck(body []byte) (errno int32, ok bool) {
	if len(body) < 4 {
		return 0, false
	}
	return int32(ne.Uint32(body[0:4])), true
}

// --- message building (config and verdicts) ---

// msgBuilder appends a netlink message into a reusable buffer.
type msgBuilder struct{ b []byte }

func (mb *msgBuilder) start(typ, flags uint16, seq uint32, family uint8, resID uint16) {
	mb.b = mb.b[:0]
	mb.b = ne.AppendUint32(mb.b, 0) // length, fixed in finish
	mb.b = ne.AppendUint16(mb.b, typ)
	mb.b = ne.AppendUint16(mb.b, flags)
	mb.b = ne.AppendUint32(mb.b, seq)
	mb.b = ne.AppendUint32(mb.b, 0) // portid: kernel
	mb.b = append(mb.b, family, 0 /* NFNETLINK_V0 */)
	mb.b = binary.BigEndian.AppendUint16(mb.b, resID)
}

func (mb *msgBuilder) attr(typ uint16, val []byte) {
	mb.b = ne.AppendUint16(mb.b, uint16(nlaHdrLen+len(val)))
	mb.b = ne.AppendUint16(mb.b, typ)
	mb.b = append(mb.b, val...)
	for len(mb.b)%4 != 0 {
		mb.b = append(mb.b, 0)
	}
}

func (mb *msgBuilder) be32(typ uint16, v uint32) {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	mb.attr(typ, a[:])
}

func (mb *msgBuilder) finish() []byte {
	ne.PutUint32(mb.b[0:4], uint32(len(mb.b)))
	return mb.b
}

// verdictBatchLen is the size of an NFQNL_MSG_VERDICT_BATCH message.
const verdictBatchLen = nlmsgHdrLen + nfgenLen + nlaHdrLen + 8

// putVerdictBatch writes a batch verdict "verdict every id <= maxID" for queue
// into b (len >= verdictBatchLen), without allocating.
func putVerdictBatch(b []byte, queue uint16, verdict, maxID uint32) []byte {
	b = b[:verdictBatchLen]
	ne.PutUint32(b[0:4], verdictBatchLen)
	ne.PutUint16(b[4:6], subsysQueue<<8|nfqnlMsgVerdictBatch)
	ne.PutUint16(b[6:8], nlmFRequest)
	ne.PutUint32(b[8:12], 0)
	ne.PutUint32(b[12:16], 0)
	b[16], b[17] = 0, 0 // AF_UNSPEC, NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], queue)
	ne.PutUint16(b[20:22], nlaHdrLen+8)
	ne.PutUint16(b[22:24], nfqaVerdictHdr)
	binary.BigEndian.PutUint32(b[24:28], verdict)
	binary.BigEndian.PutUint32(b[28:32], maxID)
	return b
}
