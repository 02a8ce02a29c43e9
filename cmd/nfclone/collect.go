package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfclone/nfclone/collect"
	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/engine"
)

// collectCommand is `nfclone collect`: the receiving side of the tunnel
// targets.
func collectCommand(g *globals) *cobra.Command {
	var colCfg collect.Config
	var colAllow []string
	var colVNIs, colSessions []uint
	cmd := &cobra.Command{
		Use:   "collect --listen ADDR [--kind K] [--vni N | --session N] [--allow CIDR] (-w FILE | --tap NAME)",
		Short: "Receive VXLAN/GENEVE/ERSPAN copies, decapsulate, write the inner frames to pcap or a TAP device",
		Long: `A collector for nfclone's vxlan, geneve and erspan targets (and any RFC 7348 / RFC 8926
sender; ERSPAN type I, II and III over GRE with --kind erspan, read from a raw GRE socket:
--listen is then an address without a port, --session keeps session ids).
GENEVE carrying IPv4/IPv6 (a Gateway Load Balancer) or VXLAN (GWLB carrying Traffic
Mirroring) is decoded down to the innermost frame; --vni matches the inner VXLAN VNI.
Without --allow it refuses to start unless it listens on loopback (or --allow any is given):
a collector reachable by anyone lets anyone inject frames. Malformed datagrams, senders
outside --allow and VNIs outside --vni are counted and dropped.`,
		Example: `  nfclone collect --listen 10.77.4.2:4789 --allow 10.77.0.0/16 -w mirror.pcap
  nfclone collect --listen :6081 --allow 10.0.0.0/8 --vni 124 --tap mirror0   # then: tcpdump -i mirror0
  nfclone collect --listen 127.0.0.1:4789 -w - | tshark -r -
  nfclone collect --kind erspan --listen 10.77.4.2 --allow 10.77.0.0/16 --session 7 -w erspan.pcap`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if colCfg.Listen == "" {
				return usageError{errors.New(`required flag(s) "listen" not set`)}
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			prefixes, any, err := collect.ParseAllow(colAllow)
			if err != nil {
				return usageError{err}
			}
			colCfg.Allow, colCfg.AllowAny, colCfg.Logger = prefixes, any, log
			for _, v := range colVNIs {
				if v > config.MaxVNI {
					return usageError{fmt.Errorf("--vni %d is out of range 0-%d", v, config.MaxVNI)}
				}
				colCfg.VNIs = append(colCfg.VNIs, uint32(v))
			}
			for _, v := range colSessions {
				if v > 1023 {
					return usageError{fmt.Errorf("--session %d is out of range 0-1023", v)}
				}
				colCfg.Sessions = append(colCfg.Sessions, uint32(v))
			}
			if err := collect.Validate(colCfg); err != nil {
				return usageError{err}
			}
			c, err := collect.New(colCfg)
			if err != nil {
				return fmt.Errorf("%w: %v", engine.ErrHost, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			log.Info("collecting", "listen", c.Addr().String(), "pcap", colCfg.PcapPath, "tap", c.TapName())
			pctx, pstop := context.WithCancel(ctx)
			var pwg sync.WaitGroup
			pwg.Add(1)
			go func() { defer pwg.Done(); collectProgress(pctx, g.stderr, c, collectProgressEvery) }()
			runErr := c.Run(ctx)
			pstop()
			pwg.Wait()
			closeErr := c.Close()
			st := c.Stats()
			fmt.Fprintf(g.stderr, "nfclone collect: received %d, decapsulated %d, written %d, malformed %d, other VNI %d, denied senders %d, write errors %d, duplicates %d\n",
				st.Received, st.Decapsulated, st.Written, st.Malformed, st.FilteredVNI, st.DeniedSender, st.WriteErrors, st.Duplicates)
			return errors.Join(runErr, closeErr)
		},
	}
	colf := cmd.Flags()
	colf.StringVar(&colCfg.Listen, "listen", "", "UDP address to listen on (host:port)")
	colf.StringVar(&colCfg.Kind, "kind", "auto", "auto, vxlan, geneve (UDP) or erspan (GRE, raw socket)")
	colf.UintSliceVar(&colVNIs, "vni", nil, "keep only this VNI (repeatable)")
	colf.UintSliceVar(&colSessions, "session", nil, "keep only this ERSPAN session id (repeatable; --kind erspan)")
	colf.DurationVar(&colCfg.Dedup, "dedup", 0, "write a packet seen again within this window once (e.g. 50ms; TTL, IP checksum, VLAN tags and Ethernet addresses aside)")
	colf.StringArrayVar(&colAllow, "allow", nil, "accept datagrams only from this CIDR (repeatable; \"any\" for all)")
	colf.StringVarP(&colCfg.PcapPath, "write", "w", "", "pcap file for the inner frames, or - for standard output")
	colf.StringVar(&colCfg.PcapFormat, "format", "pcap", "pcap or pcapng")
	colf.StringVar(&colCfg.TapName, "tap", "", "create this TAP device and write the inner frames to it")
	return cmd
}

// collectProgressEvery is how often collect looks at its counters while it
// runs.
const collectProgressEvery = time.Second

// collectProgress prints a line on w whenever a counter of trouble (denied
// senders, malformed datagrams, other VNIs, write errors) changed since the
// last look, with the last denied sender and decode error: a collector that
// drops everything says so while it runs, not only at exit. It returns
// when ctx ends.
func collectProgress(ctx context.Context, w io.Writer, c *collect.Collector, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last collect.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := c.Stats()
		if st.DeniedSender == last.DeniedSender && st.Malformed == last.Malformed &&
			st.FilteredVNI == last.FilteredVNI && st.WriteErrors == last.WriteErrors {
			continue
		}
		last = st
		fmt.Fprintln(w, collectLine(st, c))
	}
}

func collectLine(st collect.Stats, c *collect.Collector) string {
	denied, malformed := c.Last()
	var b strings.Builder
	fmt.Fprintf(&b, "nfclone collect: so far received %d, written %d; denied senders %d", st.Received, st.Written, st.DeniedSender)
	if denied.IsValid() {
		fmt.Fprintf(&b, " (last %s, not in --allow)", denied)
	}
	fmt.Fprintf(&b, ", malformed %d", st.Malformed)
	if malformed != nil {
		fmt.Fprintf(&b, " (last: %v)", malformed)
	}
	fmt.Fprintf(&b, ", other VNI %d, write errors %d", st.FilteredVNI, st.WriteErrors)
	return b.String()
}
