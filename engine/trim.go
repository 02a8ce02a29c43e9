package engine

import (
	"io"
	"net/netip"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/gsotrim"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/status"
)

// trimmer puts the segment-size program (package gsotrim) on the egress
// of a device: the TCP super-packets the kernel routes into one of
// nfclone's VXLAN devices are cut to what the path to the remote takes.
type trimmer interface {
	Attach(index, limit int) (trimAttachment, error)
}

// trimAttachment is the program on one device: its counters, and Close
// removes it.
type trimAttachment interface {
	io.Closer
	Counts() (gsotrim.Counts, error)
}

// kernelTrims attaches gsotrim's program.
type kernelTrims struct{}

func (kernelTrims) Attach(index, limit int) (trimAttachment, error) {
	a, err := gsotrim.Attach(index, limit)
	if err != nil {
		return nil, err // not a nil *Attachment in an interface
	}
	return a, nil
}

// trimWant is the program for Limit (the longest inner IP packet the path
// takes) on the device of ifindex Index.
type trimWant struct{ Index, Limit int }

// planTrims says which of the VXLAN devices nfclone creates for c get the
// program: each one present (idx) whose path to its remote (path: its MTU,
// 0 when unknown) takes an inner packet of config.MinTrimLimit bytes. The
// program only acts on a super-packet whose segments the path would not
// take whole, so a device over a jumbo underlay gets it too and leaves
// everything as it is.
func planTrims(c *config.Config, idx map[string]int, path func(netip.AddrPort) int) map[string]trimWant {
	out := map[string]trimWant{}
	for _, s := range c.Sessions {
		for _, t := range s.Targets {
			if !t.OwnVXLAN() {
				continue
			}
			dev := rules.VXLANDevice(t)
			if _, ok := out[dev]; ok || idx[dev] == 0 {
				continue
			}
			ap := t.RemoteAddrs[0]
			limit := path(ap) - config.TunnelOverhead(ap.Addr())
			if limit < config.MinTrimLimit {
				continue
			}
			out[dev] = trimWant{Index: idx[dev], Limit: limit}
		}
	}
	return out
}

// trimmed is a device's program as attached (c nil: attaching failed, not
// tried again until the device or its path changes).
type trimmed struct {
	trimWant
	c trimAttachment
}

// syncTrims puts the programs planTrims wants on the devices and removes
// the others (a device re-created or gone, a path MTU changed). The map
// changes under e.mu (Status reads it).
func (e *Engine) syncTrims() {
	rt := e.rt
	if rt.h.trims == nil || rt.cfg == nil {
		return
	}
	want := planTrims(rt.cfg, interfaceIndexes(rt.cfg, rt.h.links), rt.h.pathMTU)
	e.mu.Lock()
	defer e.mu.Unlock()
	for dev, have := range rt.trims {
		if w, ok := want[dev]; ok && w == have.trimWant {
			continue
		}
		e.removeTrim(dev, have)
	}
	for dev, w := range want {
		if _, ok := rt.trims[dev]; ok {
			continue
		}
		c, err := rt.h.trims.Attach(w.Index, w.Limit)
		if err != nil {
			e.Log.Warn("the kernel fragments the outer datagrams of the super-packets routed into this device: attaching the segment-size program failed", "device", dev, "err", err)
		} else {
			e.Log.Info("TCP super-packets routed into the device are cut to the path", "device", dev, "inner_mtu", w.Limit)
		}
		rt.trims[dev] = trimmed{trimWant: w, c: c}
	}
}

// closeTrims removes every program (shutdown).
func (e *Engine) closeTrims() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for dev, have := range e.rt.trims {
		e.removeTrim(dev, have)
	}
}

// removeTrim detaches device dev's program and forgets it (e.mu held).
func (e *Engine) removeTrim(dev string, have trimmed) {
	if have.c != nil {
		if err := have.c.Close(); err != nil {
			e.Log.Warn("removing the segment-size program", "device", dev, "err", err)
		}
	}
	delete(e.rt.trims, dev)
}

// tunnelCut is what the program on target t's VXLAN device counted (nil:
// none there). The caller holds e.mu.
func (rt *runtime) tunnelCut(t config.Target) *status.TunnelCut {
	if !t.OwnVXLAN() {
		return nil
	}
	have, ok := rt.trims[rules.VXLANDevice(t)]
	if !ok || have.c == nil {
		return nil
	}
	n, err := have.c.Counts()
	if err != nil {
		return nil
	}
	return &status.TunnelCut{InnerMTU: have.Limit, Cut: n.Cut, Fragmented: n.Fragmented}
}
