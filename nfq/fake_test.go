package nfq

import (
	"encoding/binary"
	"os"
	"sync"
	"testing"
	"time"
)

// --- canned nfnetlink messages ---

func appendAttr(b []byte, typ uint16, val []byte) []byte {
	b = ne.AppendUint16(b, uint16(4+len(val)))
	b = ne.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func be32b(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func nlMessage(typ, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
	b := ne.AppendUint32(nil, uint32(16+4+len(attrs)))
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = append(b, family, 0)
	b = binary.BigEndian.AppendUint16(b, resID)
	return append(b, attrs...)
}

type qpkt struct {
	id     uint32
	data   []byte
	capLen uint32
	inIf   uint32
	hw     []byte
	mark   uint32 // 0: 7
	info   uint32 // NFQA_SKB_INFO (0: none)
	ts     []byte // NFQA_TIMESTAMP (nil: none)
	hook   uint8  // NF_INET_* (0: LOCAL_IN)
}

func queuePacketMsg(p qpkt) []byte {
	var a []byte
	hdr := be32b(p.id)
	hook := p.hook
	if hook == 0 {
		hook = 1
	}
	hdr = append(hdr, 0x08, 0x00, hook)
	a = appendAttr(a, nfqaPacketHdr, hdr)
	mark := p.mark
	if mark == 0 {
		mark = 7
	}
	a = appendAttr(a, nfqaMark, be32b(mark))
	if p.inIf != 0 {
		a = appendAttr(a, nfqaIfIndexIn, be32b(p.inIf))
	}
	if p.hw != nil {
		hw := binary.BigEndian.AppendUint16(nil, uint16(len(p.hw)))
		hw = append(hw, 0, 0)
		hw = append(hw, p.hw...)
		for len(hw) < 12 {
			hw = append(hw, 0)
		}
		a = appendAttr(a, nfqaHwAddr, hw)
	}
	if p.info != 0 {
		a = appendAttr(a, nfqaSkbInfo, be32b(p.info))
	}
	if p.ts != nil {
		a = appendAttr(a, nfqaTimestamp, p.ts)
	}
	a = appendAttr(a, nfqaPayload, p.data)
	if p.capLen != 0 {
		a = appendAttr(a, nfqaCapLen, be32b(p.capLen))
	}
	return nlMessage(subsysQueue<<8|nfqnlMsgPacket, 0, 0, 2, 0, a)
}

func logPacketMsg(seq uint32, data []byte) []byte {
	var a []byte
	a = appendAttr(a, 1, []byte{0x08, 0x00, 1, 0})
	a = appendAttr(a, nfulaPayload, data)
	a = appendAttr(a, nfulaSeq, be32b(seq))
	return nlMessage(subsysUlog<<8|nfulnlMsgPacket, nlmFMulti, 0, 2, 5, a)
}

func ackMsg(seq uint32, errno int32) []byte {
	b := ne.AppendUint32(nil, 16+4+16)
	b = ne.AppendUint16(b, nlmsgError)
	b = ne.AppendUint16(b, 0)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0)
	b = ne.AppendUint32(b, uint32(errno))
	b = append(b, make([]byte, 16)...)
	return b
}

func doneMsg() []byte {
	b := ne.AppendUint32(nil, 20)
	b = ne.AppendUint16(b, nlmsgDone)
	b = ne.AppendUint16(b, nlmFMulti)
	b = ne.AppendUint32(b, 0)
	b = ne.AppendUint32(b, 0)
	return ne.AppendUint32(b, 0)
}

func ipv6(n int) []byte {
	b := make([]byte, n)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(n-40))
	b[6] = 17
	b[7] = 64
	b[8], b[9] = 0xfd, 0x77
	b[24], b[25], b[39] = 0xfd, 0x77, 2
	return b
}

// --- fake socket ---

type fakeItem struct {
	dgram []byte
	err   error
}

// fakeSock feeds canned datagrams in bursts: one RecvBatch returns at most
// the rest of the current burst. It acknowledges config messages and
// records batch verdicts.
type fakeSock struct {
	mu           sync.Mutex
	bursts       [][]fakeItem
	bufs         [][]byte
	wake         chan struct{}
	intr         bool
	verdicts     []uint32
	verdictKinds []uint32 // NF_ACCEPT, NF_DROP of each batch verdict
	verdictLens  []int    // the length of each batch verdict message
	cfgFlags     []uint32 // the NFQA_CFG_FLAGS of each config message that set them
	sends        int
	reads        int // RecvBatch calls that returned datagrams
	rebufs       int // receive buffers replaced (packets kept in place)
	closed       bool
	ackErr       int32
	sendErr      error
}

func newFakeSock() *fakeSock { return &fakeSock{wake: make(chan struct{}, 1)} }

func (f *fakeSock) Prepare(bufs [][]byte) { f.bufs = bufs }

func (f *fakeSock) Rebuf(i int, b []byte) {
	f.mu.Lock()
	f.bufs[i] = b
	f.rebufs++
	f.mu.Unlock()
}

func (f *fakeSock) feed(items ...fakeItem) {
	f.mu.Lock()
	f.bursts = append(f.bursts, items)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// left is the number of datagrams not read yet.
func (f *fakeSock) left() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range f.bursts {
		n += len(b)
	}
	return n
}

func (f *fakeSock) feedDgrams(ds ...[]byte) {
	items := make([]fakeItem, len(ds))
	for i, d := range ds {
		items[i] = fakeItem{dgram: d}
	}
	f.feed(items...)
}

func (f *fakeSock) RecvBatch(lens []int, trunc []bool, block bool) (int, error) {
	for {
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			return 0, os.ErrClosed
		}
		if f.intr {
			f.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if len(f.bursts) > 0 {
			b := f.bursts[0]
			n := 0
			var err error
			for n < min(len(f.bufs), len(lens)) && len(b) > 0 {
				it := b[0]
				if it.err != nil {
					if n == 0 {
						err = it.err
						b = b[1:]
					}
					break
				}
				c := copy(f.bufs[n], it.dgram)
				lens[n] = len(it.dgram)
				trunc[n] = c < len(it.dgram)
				b = b[1:]
				n++
			}
			if len(b) == 0 {
				f.bursts = f.bursts[1:]
			} else {
				f.bursts[0] = b
			}
			if n > 0 {
				f.reads++
			}
			f.mu.Unlock()
			return n, err
		}
		f.mu.Unlock()
		if !block {
			return 0, nil
		}
		<-f.wake
	}
}

func (f *fakeSock) Send(b []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if f.sendErr != nil {
		return f.sendErr
	}
	m, _, err := nextMsg(b)
	if err != nil {
		return err
	}
	if m.flags&nlmFAck != 0 {
		f.bursts = append([][]fakeItem{{{dgram: ackMsg(m.seq, f.ackErr)}}}, f.bursts...)
	}
	if m.typ == subsysQueue<<8|nfqnlMsgVerdictBatch {
		f.verdicts = append(f.verdicts, binary.BigEndian.Uint32(b[28:32]))
		f.verdictKinds = append(f.verdictKinds, binary.BigEndian.Uint32(b[24:28]))
		f.verdictLens = append(f.verdictLens, len(b))
	}
	if m.typ == subsysQueue<<8|nfqnlMsgConfig {
		for a := m.body[4:]; len(a) > 0; {
			typ, val, rest, err := nextAttr(a)
			if err != nil {
				return err
			}
			if typ == nfqaCfgFlags {
				f.cfgFlags = append(f.cfgFlags, binary.BigEndian.Uint32(val))
			}
			a = rest
		}
	}
	return nil
}

func (f *fakeSock) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.intr = !t.IsZero() && t.Before(time.Now())
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeSock) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeSock) verdictList() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.verdicts...)
}

// waitFor polls cond for up to 3 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
