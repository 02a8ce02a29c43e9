package engine

import (
	"context"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/packet"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/rules"
	"github.com/nfclone/nfclone/sink"
	"github.com/nfclone/nfclone/status"
)

func mustParse(t *testing.T, y string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(y), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The routing plan of a config, as `ip` commands, in apply order.
func TestRoutePlan(t *testing.T) {
	c := mustParse(t, `
sessions:
  - name: q
    method: queue
    sources: [{interface: e0}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      - {kind: gateway, gateway: "fd77:2::2", device: e1}
      - {kind: gateway, gateway: 10.77.4.2, device: e3, mac: "02:00:00:00:77:42"}
  - name: again
    method: log
    sources: [{interface: e2}]
    targets:
      - {kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}
      # a kernel VXLAN device each (the default with one remote) ...
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 8}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 7}
      # ... and none for nfclone's own encapsulation
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 9, encap: userspace}
      - {kind: vxlan, remote: ["10.77.4.2:4789", "10.77.4.3:4789"], vni: 10}
      - {kind: geneve, remote: "10.77.4.2:6081", vni: 11}
  - name: tap
    sources: [{interface: e0}]
    targets:
      - {kind: device, device: agg0, create: true, promisc: true}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 7}
`)
	got := RoutePlan(c).Render()
	want := []string{
		"ip link add name agg0-tx up promisc on type veth peer name agg0 promisc on",
		"ip link set agg0-tx gso_max_segs 1", // the readers of agg0 get wire packets
		"ethtool -K agg0-tx tx off",
		"ip link set agg0 up",
		"ip link add name nfcvx7fecd396 up type vxlan id 8 remote 10.77.4.2 dstport 4789",
		"ip link add name nfcvx9e80c225 up type vxlan id 7 remote 10.77.4.2 dstport 4789", // shared with the dup session tap
		"ip link set e1 arp off",
		"ip neigh replace 10.77.4.2 lladdr 02:00:00:00:77:42 dev e3 nud permanent",
		"ip route add unreachable default metric 4294967295 table 20035",
		"ip route add default via 10.77.2.2 dev e1 table 20035",
		"ip -6 route add unreachable default metric 4294967295 table 20036",
		"ip -6 route add default via fd77:2::2 dev e1 table 20036",
		"ip route add unreachable default metric 4294967295 table 20037",
		"ip route add default via 10.77.4.2 dev e3 table 20037",
		"ip rule add pref 100 fwmark 0x81/0xff lookup 20035",
		"ip -6 rule add pref 101 fwmark 0x82/0xff lookup 20036",
		"ip rule add pref 102 fwmark 0x83/0xff lookup 20037",
		"ip rule add pref 1000 lookup local",
		"ip rule del pref 0 lookup local",
		"ip -6 rule add pref 1000 lookup local",
		"ip -6 rule del pref 0 lookup local",
	}
	if strings.TrimSpace(got) != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	// A dup-only config without ARP settings changes no routing.
	if p := RoutePlan(mustParse(t, "sessions: [{name: d, sources: [{interface: e0}], targets: [{kind: device, device: e1}]}]")); !p.Empty() {
		t.Fatalf("unexpected plan: %s", p.Render())
	}
}

type countSink struct{ n int }

func (s *countSink) Name() string { return "count" }
func (s *countSink) Send(b []*packet.Packet) (int, error) {
	s.n += len(b)
	return len(b), nil
}
func (s *countSink) Close() error { return nil }

// The capture limit lets exactly N copies through, across batches, and
// stops the engine.
func TestLimit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := newLimit(5, cancel)
	inner := &countSink{}
	s := l.wrap(inner)
	batch := func(n int) []*packet.Packet {
		b := make([]*packet.Packet, n)
		for i := range b {
			b[i] = &packet.Packet{}
		}
		return b
	}
	s.Send(batch(3))
	if ctx.Err() != nil {
		t.Fatal("stopped too early")
	}
	b := batch(4)
	s.Send(b)
	s.Send(batch(2))
	if inner.n != 5 {
		t.Fatalf("sent %d, want 5", inner.n)
	}
	if b[1].Errs != 0 || b[2].Errs != 1 || b[3].Errs != 1 {
		t.Fatalf("copies beyond the limit must count as not delivered: %v %v %v", b[1].Errs, b[2].Errs, b[3].Errs)
	}
	if ctx.Err() == nil {
		t.Fatal("the limit did not stop the engine")
	}
	// capture reports these 4 (2 of the second batch, the whole third) as
	// received after the count, not as send errors.
	if got := l.refused(); got != 4 {
		t.Fatalf("refused %d, want 4", got)
	}
}

// The capture's report sums the sessions' ledgers field by field.
func TestAddSnapshots(t *testing.T) {
	// Every counter of the ledger, also one added later, is summed: set
	// each to 1, add twice, and each must be 2.
	var one pipeline.Snapshot
	fill(reflect.ValueOf(&one).Elem(), 1)
	got := addSnapshots(addSnapshots(pipeline.Snapshot{}, one), one)
	var want pipeline.Snapshot
	fill(reflect.ValueOf(&want).Elem(), 2)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// fill sets every unsigned integer field of v, recursively, to n.
func fill(v reflect.Value, n uint64) {
	switch v.Kind() {
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i), n)
		}
	case reflect.Uint64, reflect.Uint32, reflect.Uint:
		v.SetUint(n)
	}
}

// A session's status follows its ledger: seen is what was offered, copied
// what was copied, and a target the kernel sends for counts every copy (the
// ones its fail-open queue let through included); nfclone's own targets
// keep their sinks' counters.
func TestSetLedger(t *testing.T) {
	own := &sink.Stats{Sent: 7}
	st := status.SessionStatus{Targets: []status.TargetStatus{{Name: "k", Kernel: true}, {Name: "o", Stats: own}}}
	setLedger(&st, pipeline.Snapshot{Offered: 12, Copied: 10, Bytes: 900, KernelSent: 4})
	if st.Seen.Packets != 12 || st.Copied != (status.Counter{Packets: 10, Bytes: 900}) || st.Ledger == nil || st.Ledger.KernelSent != 4 {
		t.Errorf("status %+v", st)
	}
	if s := st.Targets[0].Stats; s == nil || s.Sent != 10 || s.Bytes != 900 {
		t.Errorf("kernel target stats %+v, want 10 sent, 900 bytes", s)
	}
	if st.Targets[1].Stats != own {
		t.Errorf("nfclone's own target stats replaced: %+v", st.Targets[1].Stats)
	}
}

// A kernel-routed session with a device target: the device gets a made-up
// next hop per family, with a permanent neighbour (the target's mac, or
// the device's own address), a device route in its own table behind the
// backstop, and a rule for the next hop's lookup. A missing device gets
// nothing (planned again when it comes). A pair nfclone creates gets its
// near end's next hop with the tunnel frames' inner destination address
// (the device is not there to ask), after the pair in the plan.
func TestRoutePlanDeviceNextHop(t *testing.T) {
	c := mustParse(t, `
sessions:
  - name: d
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: device, device: e3}]
  - name: m
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: device, device: e4, mac: "02:00:00:00:77:44"}]
  - name: gone
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: device, device: e9}]
  - name: tap
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: device, device: agg0, create: true}]
`)
	macs := map[string]net.HardwareAddr{"e3": {2, 0, 0, 0, 0x77, 0x43}, "e4": {2, 0, 0, 0, 0x77, 0x04}}
	p := routePlan(c, nil, rules.DeviceRoutes(c), func(n string) net.HardwareAddr { return macs[n] })
	want := `ip link add name agg0-tx up type veth peer name agg0
ip link set agg0-tx gso_max_segs 1
ethtool -K agg0-tx tx off
ip link set agg0 up
ip neigh replace 169.254.77.1 lladdr 02:00:00:00:77:43 dev e3 nud permanent
ip neigh replace fe80::4e43:1 lladdr 02:00:00:00:77:43 dev e3 nud permanent
ip neigh replace 169.254.77.2 lladdr 02:00:00:00:77:44 dev e4 nud permanent
ip neigh replace fe80::4e43:2 lladdr 02:00:00:00:77:44 dev e4 nud permanent
ip neigh replace 169.254.77.4 lladdr 02:4e:43:00:00:02 dev agg0-tx nud permanent
ip neigh replace fe80::4e43:4 lladdr 02:4e:43:00:00:02 dev agg0-tx nud permanent
ip route add unreachable default metric 4294967295 table 21035
ip route add default dev e3 table 21035
ip -6 route add unreachable default metric 4294967295 table 21035
ip -6 route add default dev e3 table 21035
ip route add unreachable default metric 4294967295 table 21036
ip route add default dev e4 table 21036
ip -6 route add unreachable default metric 4294967295 table 21036
ip -6 route add default dev e4 table 21036
ip route add unreachable default metric 4294967295 table 21038
ip route add default dev agg0-tx table 21038
ip -6 route add unreachable default metric 4294967295 table 21038
ip -6 route add default dev agg0-tx table 21038
ip rule add pref 100 to 169.254.77.1 lookup 21035
ip -6 rule add pref 100 to fe80::4e43:1 lookup 21035
ip rule add pref 100 to 169.254.77.2 lookup 21036
ip -6 rule add pref 100 to fe80::4e43:2 lookup 21036
ip rule add pref 100 to 169.254.77.4 lookup 21038
ip -6 rule add pref 100 to fe80::4e43:4 lookup 21038
`
	if got := p.Render(); got != want {
		t.Errorf("plan:\n%s\nwant:\n%s", got, want)
	}
	if err := p.Validate(); err != nil {
		t.Error(err)
	}
}
