package engine

import (
	"log/slog"
	"net/netip"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/sink"
)

// openERSPAN opens an erspan target: ERSPAN type II or III over GRE, built
// in userspace and sent from raw GRE sockets carrying the copy mark.
func openERSPAN(c *config.Config, t config.Target, name string, log *slog.Logger) (sink.Sink, error) {
	var remotes []netip.Addr
	for _, ap := range t.RemoteAddrs {
		remotes = append(remotes, ap.Addr())
	}
	return sink.NewERSPAN(sink.ERSPANConfig{Name: name, Remotes: remotes, Version: t.Version,
		Session: uint16(*t.SessionID), Mark: c.Mark, Logger: log})
}

// erspanMTU is the largest copy an erspan target sends without the outer
// packet being fragmented: the smallest path MTU to its remotes less the
// outer IP header, GRE, ERSPAN and the inner Ethernet header (0: unknown).
func erspanMTU(t config.Target, mark uint32) int {
	mtu := 0
	for _, ap := range t.RemoteAddrs {
		a := ap.Addr()
		// SystemPathMTU asks with a UDP socket; the route, hence the MTU, is the
		// same for GRE.
		pm := config.SystemPathMTU(netip.AddrPortFrom(a, 9), mark)
		if pm == 0 {
			continue
		}
		ip := 20
		if a.Is6() {
			ip = 40
		}
		if m := pm - ip - sink.ERSPANHdrLen(t.Version) - sink.EthHdrLen; mtu == 0 || m < mtu {
			mtu = m
		}
	}
	return mtu
}

// openPcapOverIP starts a pcap-over-ip target's TCP server.
func openPcapOverIP(sc config.Session, t config.Target, name string, log *slog.Logger) (sink.Sink, error) {
	cfg := sink.PcapOverIPConfig{Name: name, Listen: t.ListenAddr, Format: string(t.Format), Snaplen: sc.Snaplen, Logger: log}
	if t.Format == config.FormatPcapng {
		cfg.Annotate = annotation(sc)
	}
	for _, p := range t.AllowPrefixes {
		if !p.IsValid() {
			cfg.AllowAny = true
			continue
		}
		cfg.Allow = append(cfg.Allow, p)
	}
	return sink.NewPcapOverIP(cfg)
}
