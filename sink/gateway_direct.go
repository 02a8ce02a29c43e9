package sink

import (
	"fmt"
	"github.com/nfclone/nfclone/packet"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// A Gateway with a device sends copies straight to the gateway's
// link-layer address through a packet socket on that device whenever the
// kernel's neighbour table has the address: the socket takes a virtio-net
// header, so TCP super-packets go whole and the kernel segments them on the
// way out (one send per 64 KiB instead of ~45 through the raw socket; the
// kernel has no GSO for raw IP sockets). Without a neighbour entry, and for
// one batch every rawEvery, copies take the raw socket and the policy route
// instead, which makes the kernel resolve the gateway and keep its entry
// confirmed (a packet socket never does). The other family's copies are
// skipped as on the raw path.
const (
	// neighbourEvery is how often the gateway's neighbour entry is read.
	neighbourEvery = time.Second
	// rawEvery is how often one batch goes through the raw socket (a batch
	// without super-packets), so that the kernel re-confirms the neighbour.
	rawEvery = 5 * time.Second
)

// neighbourFunc returns the link-layer address the kernel has for the
// gateway on the device (ok false: none, or not usable).
type neighbourFunc func() (mac net.HardwareAddr, ok bool)

type gwDirect struct {
	dev      *Device
	lookup   neighbourFunc
	mu       sync.Mutex // one lookup at a time
	nextLook atomic.Int64
	nextRaw  atomic.Int64
	have     atomic.Bool
	now      func() time.Time
	pd       sync.Pool // []*packet.Packet scratch for the family filter
}

func newGwDirect(dev *Device, lookup neighbourFunc) *gwDirect {
	d := &gwDirect{dev: dev, lookup: lookup, now: time.Now}
	d.pd.New = func() any { s := make([]*packet.Packet, 0, 64); return &s }
	return d
}

// refresh reads the neighbour entry when it is due.
func (d *gwDirect) refresh(now int64) {
	if now < d.nextLook.Load() || !d.mu.TryLock() {
		return
	}
	defer d.mu.Unlock()
	d.nextLook.Store(now + int64(neighbourEvery))
	mac, ok := d.lookup()
	if ok && len(mac) == 6 {
		var to [6]byte
		copy(to[:], mac)
		if cur := d.dev.to.Load(); cur == nil || cur.dst != to {
			d.dev.setDst(to)
		}
	}
	d.have.Store(ok && len(mac) == 6)
}

// use reports whether this batch goes through the packet socket.
func (d *gwDirect) use(batch []*packet.Packet) bool {
	now := d.now().UnixNano()
	d.refresh(now)
	if !d.have.Load() {
		return false
	}
	if now >= d.nextRaw.Load() {
		for _, p := range batch {
			if p.GSO.Type != 0 {
				return true // a super-packet cannot take the raw socket
			}
		}
		d.nextRaw.Store(now + int64(rawEvery))
		return false
	}
	return true
}

// send sends the copies of family only (0: all) through the packet socket.
func (d *gwDirect) send(batch []*packet.Packet, only uint8) (int, error) {
	if only == 0 {
		return d.dev.Send(batch)
	}
	sp := d.pd.Get().(*[]*packet.Packet)
	defer d.pd.Put(sp)
	s := (*sp)[:0]
	for _, p := range batch {
		if p.Family == only || (p.Family != 4 && p.Family != 6) {
			s = append(s, p)
		}
	}
	*sp = s
	defer clear(s)
	if len(s) == 0 {
		return 0, nil
	}
	return d.dev.Send(s)
}

// kernelNeighbour reads the kernel's neighbour entry of gw on ifindex.
func kernelNeighbour(ifindex int, gw netip.Addr) neighbourFunc {
	return func() (net.HardwareAddr, bool) {
		c, err := rtnetlink.Dial(nil)
		if err != nil {
			return nil, false
		}
		defer c.Close()
		ns, err := c.Neigh.List()
		if err != nil {
			return nil, false
		}
		const usable = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT | unix.NUD_NOARP
		for _, n := range ns {
			if int(n.Index) != ifindex || n.Attributes == nil || n.State&usable == 0 {
				continue
			}
			a, ok := netip.AddrFromSlice(n.Attributes.Address)
			if ok && a.Unmap() == gw.Unmap() && len(n.Attributes.LLAddress) == 6 {
				return n.Attributes.LLAddress, true
			}
		}
		return nil, false
	}
}

// openDirect opens the packet socket on cfg.Device for the copies to
// cfg.Gateway; nil when the socket takes no virtio-net header.
func openDirect(name string, mark uint32, cfg GatewayConfig) (*gwDirect, error) {
	ifi, err := net.InterfaceByName(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("sink: gateway device %q: %w", cfg.Device, err)
	}
	d, err := NewDevice(DeviceConfig{Name: name, Ifindex: ifi.Index, DstMAC: ifi.HardwareAddr, Mark: mark, NoMark: cfg.NoMark, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if !d.vnet {
		d.Close()
		return nil, nil // no virtio-net header: the raw socket does as well
	}
	return newGwDirect(d, kernelNeighbour(ifi.Index, cfg.Gateway)), nil
}
