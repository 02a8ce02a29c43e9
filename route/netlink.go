package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlKernel is the rtnetlink implementation of Kernel.
type nlKernel struct {
	c *rtnetlink.Conn
	// raw is a plain netlink socket used only to dump policy rules: the
	// rtnetlink package fails a whole dump on a rule attribute it does not
	// know (newer kernels have dscp/flowlabel/port-mask selectors), while
	// this package only needs to recognise its own plain rules.
	raw *netlink.Conn
	// netns is a descriptor of the namespace of OpenNetNS (-1: the
	// process's own), for the sysctl files of created devices.
	netns int
}

// Open returns a Kernel for the network namespace of the calling thread
// (normally the process's namespace). Close it when done.
func Open() (Kernel, error) { return open(nil) }

// OpenNetNS returns a Kernel operating in the network namespace referred to
// by fd (e.g. an open /run/netns/NAME or /proc/PID/ns/net). The fd may be
// closed after OpenNetNS returns: the sockets keep the namespace.
func OpenNetNS(fd int) (Kernel, error) { return open(&netlink.Config{NetNS: fd}) }

// OpenNetNSPath is OpenNetNS for a namespace file such as /run/netns/NAME.
func OpenNetNSPath(path string) (Kernel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace: %w", err)
	}
	defer f.Close()
	return OpenNetNS(int(f.Fd()))
}

func open(cfg *netlink.Config) (Kernel, error) {
	c, err := rtnetlink.Dial(cfg)
	if err != nil {
		return nil, fmt.Errorf("dialing rtnetlink: %w", err)
	}
	raw, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("dialing rtnetlink: %w", err)
	}
	// Dumps filtered by the kernel (DefaultRoutes); older kernels refuse
	// the option and filtering happens here.
	_ = raw.SetOption(netlink.GetStrictCheck, true)
	k := &nlKernel{c: c, raw: raw, netns: -1}
	if cfg != nil && cfg.NetNS > 0 {
		if k.netns, err = unix.FcntlInt(uintptr(cfg.NetNS), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			k.Close()
			return nil, fmt.Errorf("keeping the network namespace: %w", err)
		}
	}
	return k, nil
}

func (k *nlKernel) Close() error {
	if k.netns >= 0 {
		unix.Close(k.netns)
		k.netns = -1
	}
	err1 := k.c.Close()
	err2 := k.raw.Close()
	if err1 != nil {
		return err1
	}
	return err2
}

func ipOf(a netip.Addr) net.IP { return net.IP(a.Unmap().AsSlice()) }

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func table8(t uint32) uint8 {
	if t < 256 {
		return uint8(t)
	}
	return unix.RT_TABLE_UNSPEC
}

func (k *nlKernel) Links() ([]Link, error) {
	msgs, err := k.c.Link.List()
	if err != nil {
		return nil, err
	}
	out := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		l := Link{Index: int(m.Index), Flags: m.Flags}
		if a := m.Attributes; a != nil {
			l.Name = a.Name
			l.MAC = a.Address
			if a.Info != nil {
				l.Kind = a.Info.Kind
			}
		}
		out = append(out, l)
	}
	return out, nil
}

func (k *nlKernel) Addrs(index int) ([]netip.Prefix, error) {
	msgs, err := k.c.Address.List()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if int(m.Index) != index || m.Attributes == nil {
			continue
		}
		ip := m.Attributes.Local
		if ip == nil {
			ip = m.Attributes.Address
		}
		a := addrOf(ip)
		if !a.IsValid() {
			continue
		}
		out = append(out, netip.PrefixFrom(a, int(m.PrefixLength)))
	}
	return out, nil
}

func (k *nlKernel) SetLinkFlags(index int, flags, mask uint32) error {
	return k.c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Index: uint32(index), Flags: flags & mask, Change: mask,
	})
}

// CreateVeth creates the pair down, silences both ends (see silence), then
// brings them up. The kernel configures the peer before the pair is
// linked, so the peer could not be brought up in the create message anyway
// (ENOTCONN, also with `ip link add ... type veth peer name P up`).
func (k *nlKernel) CreateVeth(v VethPair) error {
	var flags uint32
	if v.Promisc {
		flags |= unix.IFF_PROMISC
	}
	err := k.c.Link.New(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC, Flags: flags, Change: flags,
		Attributes: &rtnetlink.LinkAttributes{
			Name: v.Name,
			MTU:  uint32(v.MTU),
			Info: &rtnetlink.LinkInfo{Kind: "veth", Data: &driver.Veth{
				PeerInfo: &rtnetlink.LinkMessage{
					Family: unix.AF_UNSPEC, Flags: flags, Change: flags,
					Attributes: &rtnetlink.LinkAttributes{Name: v.Peer, MTU: uint32(v.MTU)},
				},
			}},
		},
	})
	if err != nil {
		return err
	}
	if err := k.configureCreated("veth", v.Up, v.Name, v.Peer); err != nil {
		return fmt.Errorf("veth %s peer %s: %w", v.Name, v.Peer, err)
	}
	return nil
}

// configureCreated silences the links nfclone has just created (names, of
// that kind) and brings them up when up is set. On error it deletes them:
// the exclusive create succeeded, so the names are ours, and the operation
// stays all or nothing.
func (k *nlKernel) configureCreated(kind string, up bool, names ...string) error {
	err := func() error {
		links, err := k.Links()
		if err != nil {
			return err
		}
		var idx []int
		for _, n := range names {
			l, ok := findLink(links, n)
			if !ok || l.Kind != kind {
				return fmt.Errorf("%s not found after creation: %w", n, errLinkNotFound)
			}
			// IPv6 stays on where the kernel routes clones: the first
			// name, the VXLAN device or a veth pair's near end.
			if err := k.silence(n, l.Index, len(idx) == 0); err != nil {
				return err
			}
			idx = append(idx, l.Index)
		}
		if kind == "veth" {
			if err := k.wireNearEnd(idx[0], names[0]); err != nil {
				return err
			}
		}
		if up {
			for i, n := range names {
				if err := k.SetLinkFlags(idx[i], unix.IFF_UP, unix.IFF_UP); err != nil {
					return fmt.Errorf("bringing up %s: %w", n, err)
				}
			}
		}
		return nil
	}()
	if err == nil {
		return nil
	}
	if links, lerr := k.Links(); lerr == nil {
		for _, l := range links {
			if l.Name == names[0] && l.Kind == kind {
				_ = k.DeleteLink(l.Index)
			}
		}
	}
	return err
}

func (k *nlKernel) CreateVXLAN(v VXLAN, underlay int) error {
	vni, port := v.VNI, v.port()
	d := &driver.Vxlan{ID: &vni, Port: &port}
	if FamilyOf(v.Remote) == IPv4 {
		d.Group = ipOf(v.Remote)
	} else {
		d.Group6 = ipOf(v.Remote)
	}
	if v.Local.IsValid() {
		if FamilyOf(v.Local) == IPv4 {
			d.Local = ipOf(v.Local)
		} else {
			d.Local6 = ipOf(v.Local)
		}
	}
	if underlay != 0 {
		u := uint32(underlay)
		d.Link = &u
	}
	err := k.c.Link.New(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Attributes: &rtnetlink.LinkAttributes{
			Name: v.Name,
			MTU:  uint32(v.MTU),
			Info: &rtnetlink.LinkInfo{Kind: "vxlan", Data: d},
		},
	})
	if err != nil {
		return err
	}
	if err := k.configureCreated("vxlan", true, v.Name); err != nil {
		return fmt.Errorf("vxlan %s: %w", v.Name, err)
	}
	return nil
}

func (k *nlKernel) DeleteLink(index int) error { return k.c.Link.Delete(uint32(index)) }

const fibRuleHdrLen = 12

func (k *nlKernel) Rules(f Family) ([]RuleInfo, error) {
	hdr := make([]byte, fibRuleHdrLen)
	hdr[0] = uint8(f)
	msgs, err := k.raw.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETRULE, Flags: netlink.Request | netlink.Dump},
		Data:   hdr,
	})
	if err != nil {
		return nil, err
	}
	var out []RuleInfo
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWRULE {
			continue
		}
		ri, err := parseRule(m.Data)
		if err != nil {
			return nil, err
		}
		if ri.Family == f {
			out = append(out, ri)
		}
	}
	return out, nil
}

// parseRule decodes a fib_rule_hdr and its attributes. Anything this
// package does not model marks the rule Other.
func parseRule(b []byte) (RuleInfo, error) {
	if len(b) < fibRuleHdrLen {
		return RuleInfo{}, fmt.Errorf("short rule message (%d bytes)", len(b))
	}
	ri := RuleInfo{}
	ri.Family = Family(b[0])
	ri.Table = uint32(b[4])
	ri.Action = b[7]
	flags := binary.NativeEndian.Uint32(b[8:12])
	dstLen := int(b[1])
	if b[2] != 0 || b[3] != 0 || flags&unix.FIB_RULE_INVERT != 0 {
		ri.Other = true
	}
	ad, err := netlink.NewAttributeDecoder(b[fibRuleHdrLen:])
	if err != nil {
		return RuleInfo{}, fmt.Errorf("decoding rule attributes: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_PRIORITY:
			ri.Pref = ad.Uint32()
		case unix.FRA_DST:
			if a, ok := netip.AddrFromSlice(ad.Bytes()); ok {
				if p, err := a.Unmap().Prefix(dstLen); err == nil {
					ri.To = p
				}
			}
		case unix.FRA_FWMARK:
			ri.Mark = ad.Uint32()
		case unix.FRA_FWMASK:
			ri.Mask = ad.Uint32()
		case unix.FRA_TABLE:
			ri.Table = ad.Uint32()
		case unix.FRA_SUPPRESS_PREFIXLEN, unix.FRA_SUPPRESS_IFGROUP:
			// The kernel dumps these as -1 (unset) on every rule.
			if ad.Uint32() != 0xffffffff {
				ri.Other = true
			}
		case unix.FRA_UNSPEC, unix.FRA_PROTOCOL, unix.FRA_PAD:
		default:
			ri.Other = true
		}
	}
	if err := ad.Err(); err != nil {
		return RuleInfo{}, fmt.Errorf("decoding rule attributes: %w", err)
	}
	if dstLen != 0 && !ri.To.IsValid() {
		ri.Other = true // a destination length without a destination
	}
	return ri, nil
}

func ruleMsg(r PolicyRule) *rtnetlink.RuleMessage {
	pref, table := r.Pref, r.Table
	attrs := &rtnetlink.RuleAttributes{Priority: &pref, Table: &table}
	if r.Mark != 0 {
		mark, mask := r.Mark, r.FwMask()
		attrs.FwMark = &mark
		if mask != 0xffffffff {
			attrs.FwMask = &mask
		}
	}
	m := &rtnetlink.RuleMessage{
		Family: uint8(r.Family), Table: table8(r.Table), Action: unix.FR_ACT_TO_TBL, Attributes: attrs,
	}
	if r.To.IsValid() {
		dst := net.IP(r.To.Addr().AsSlice())
		attrs.Dst, m.DstLength = &dst, uint8(r.To.Bits())
	}
	return m
}

func (k *nlKernel) AddRule(r PolicyRule) error    { return k.c.Rule.Add(ruleMsg(r)) }
func (k *nlKernel) DeleteRule(r PolicyRule) error { return k.c.Rule.Delete(ruleMsg(r)) }

// DefaultRoutes dumps one table only: with strict checking on (set at
// open), the kernel filters the dump by RTA_TABLE, so a host with a large
// main table (a router's full view) costs nothing here — the routing side
// is compared with the kernel on every event and every few seconds. On a
// kernel without strict checking the whole dump is filtered here.
func (k *nlKernel) DefaultRoutes(f Family, table uint32) ([]RouteInfo, error) {
	req := &rtnetlink.RouteMessage{Family: uint8(f), Table: table8(table), Attributes: rtnetlink.RouteAttributes{Table: table}}
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	msgs, err := k.raw.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETROUTE, Flags: netlink.Request | netlink.Dump},
		Data:   b,
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // the table does not exist (yet)
	}
	if err != nil {
		return nil, err
	}
	var out []RouteInfo
	for _, nm := range msgs {
		if nm.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		var m rtnetlink.RouteMessage
		if err := m.UnmarshalBinary(nm.Data); err != nil {
			return nil, fmt.Errorf("decoding route: %w", err)
		}
		t := m.Attributes.Table
		if t == 0 {
			t = uint32(m.Table)
		}
		if Family(m.Family) != f || t != table || m.DstLength != 0 {
			continue
		}
		switch m.Type {
		case unix.RTN_UNICAST:
			out = append(out, RouteInfo{
				Family: f, Table: t, Gateway: addrOf(m.Attributes.Gateway), Index: int(m.Attributes.OutIface),
				Metric: m.Attributes.Priority,
			})
		case unix.RTN_UNREACHABLE:
			out = append(out, RouteInfo{Family: f, Table: t, Unreachable: true, Metric: m.Attributes.Priority})
		}
	}
	return out, nil
}

func routeMsg(r RouteInfo) *rtnetlink.RouteMessage {
	if r.Unreachable {
		return &rtnetlink.RouteMessage{
			Family:     uint8(r.Family),
			Table:      table8(r.Table),
			Protocol:   unix.RTPROT_BOOT,
			Scope:      unix.RT_SCOPE_UNIVERSE,
			Type:       unix.RTN_UNREACHABLE,
			Attributes: rtnetlink.RouteAttributes{Table: r.Table, Priority: r.Metric},
		}
	}
	scope := uint8(unix.RT_SCOPE_UNIVERSE)
	if !r.Gateway.IsValid() {
		scope = unix.RT_SCOPE_LINK // a device route, as `ip route add default dev X`
	}
	return &rtnetlink.RouteMessage{
		Family:   uint8(r.Family),
		Table:    table8(r.Table),
		Protocol: unix.RTPROT_BOOT,
		Scope:    scope,
		Type:     unix.RTN_UNICAST,
		Attributes: rtnetlink.RouteAttributes{
			Gateway: ipOf(r.Gateway), OutIface: uint32(r.Index), Table: r.Table,
		},
	}
}

func (k *nlKernel) AddDefaultRoute(r RouteInfo) error { return k.c.Route.Add(routeMsg(r)) }

func (k *nlKernel) DeleteDefaultRoute(r RouteInfo) error {
	m := routeMsg(r)
	m.Protocol = 0                  // any protocol
	m.Scope = unix.RT_SCOPE_NOWHERE // any scope, like `ip route del`
	return k.c.Route.Delete(m)
}

func (k *nlKernel) Neighbours(index int) ([]NeighInfo, error) {
	msgs, err := k.c.Neigh.List()
	if err != nil {
		return nil, err
	}
	var out []NeighInfo
	for _, m := range msgs {
		if int(m.Index) != index || m.Attributes == nil {
			continue
		}
		a := addrOf(m.Attributes.Address)
		if !a.IsValid() {
			continue
		}
		var mac net.HardwareAddr
		if len(m.Attributes.LLAddress) > 0 {
			mac = append(net.HardwareAddr(nil), m.Attributes.LLAddress...)
		}
		out = append(out, NeighInfo{Index: index, Addr: a, MAC: mac, State: m.State})
	}
	return out, nil
}

func (k *nlKernel) SetNeighbour(n NeighInfo) error {
	// NeighService.New uses NLM_F_EXCL; replace needs CREATE|REPLACE.
	_, err := k.c.Execute(&rtnetlink.NeighMessage{
		Family: uint16(FamilyOf(n.Addr)),
		Index:  uint32(n.Index),
		State:  n.State,
		Attributes: &rtnetlink.NeighAttributes{
			Address: ipOf(n.Addr), LLAddress: n.MAC, IfIndex: uint32(n.Index),
		},
	}, unix.RTM_NEWNEIGH, netlink.Request|netlink.Create|netlink.Replace|netlink.Acknowledge)
	return err
}

func (k *nlKernel) DeleteNeighbour(index int, addr netip.Addr) error {
	// NeighService.Delete ignores its argument; build the request here.
	_, err := k.c.Execute(&rtnetlink.NeighMessage{
		Family:     uint16(FamilyOf(addr)),
		Index:      uint32(index),
		Attributes: &rtnetlink.NeighAttributes{Address: ipOf(addr), IfIndex: uint32(index)},
	}, unix.RTM_DELNEIGH, netlink.Request|netlink.Acknowledge)
	return err
}
