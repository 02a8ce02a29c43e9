package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// pingNoDup pings and requires every reply and no duplicate: a copy that
// reached the destination would be answered a second time (DUP!).
func pingNoDup(t *testing.T, l *lab.Lab, ns, dst string, n int, interval time.Duration, what string) {
	t.Helper()
	sent, recv, dupes, err := lab.Ping(context.Background(), l, ns, dst, n, interval)
	if err != nil {
		t.Fatal(err)
	}
	if sent != n || recv != n || dupes != 0 {
		t.Fatalf("%s: ping %s from %s: sent %d received %d duplicates %d, want %d/%d/0 (copies reached the destination?)", what, dst, ns, sent, recv, dupes, n, n)
	}
}

// copiesBackWithin pings once at a time until a copy of an echo request
// shows in capture c (started before the outage), and fails if none did
// within d of start.
func copiesBackWithin(t *testing.T, l *lab.Lab, c *lab.Capture, start time.Time, d time.Duration, what string) time.Duration {
	t.Helper()
	base := c.Count()
	for time.Since(start) < d {
		pingNoDup(t, l, l.Src, lab.Col2IP, 1, 200*time.Millisecond, what)
		if c.Count() > base {
			took := time.Since(start)
			c.Stop()
			return took
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.Stop()
	t.Fatalf("%s: no copy at the collector within %s", what, d)
	return 0
}

func sessionMissingRoutes(t *testing.T, l *lab.Lab, d *daemon, name string) []any {
	t.Helper()
	for _, s := range status(t, l, d)["sessions"].([]any) {
		m := s.(map[string]any)
		if m["name"] == name {
			r, _ := m["missing_routes"].([]any)
			return r
		}
	}
	t.Fatalf("no session %s in status", name)
	return nil
}

// Issue 11, item 1: a link flap on a gateway target's device deletes the
// gateway route of nfclone's copy table. Copies must never take another
// route (no DUP! at the destination of the forwarded pings they copy),
// status says the route is missing while it is, and copies resume by
// themselves within 5 s once the link is up.
func TestLinkFlapCopiesNeverReachProduction(t *testing.T) {
	lab.RequireTools(t, "tcpdump", "ping", "curl")
	l := lab.New(t)
	d := startNfclone(t, l, `
metrics: {listen: "127.0.0.1:9464"}
sessions:
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`)
	c := l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	pingNoDup(t, l, l.Src, lab.Col2IP, pings, 20*time.Millisecond, "before the flap")
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "copies before the flap", c.Stop(), echoReq(lab.SrcIP), pings)

	// The flap of the issue: down and up at once.
	c = l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "down")
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "up")
	took := copiesBackWithin(t, l, c, time.Now(), 5*time.Second, "after a flap")
	t.Logf("copies back %s after the flap", took.Round(time.Millisecond))
	c = l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	pingNoDup(t, l, l.Src, lab.Col2IP, pings, 20*time.Millisecond, "after the flap")
	c.WaitCount(pings, 5*time.Second)
	requireCount(t, "copies after the flap", c.Stop(), echoReq(lab.SrcIP), pings)

	// A longer outage: status and metrics say so, copies go nowhere.
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "down")
	lab.WaitFor(t, 5*time.Second, func() bool { return len(sessionMissingRoutes(t, l, d, "q")) == 1 },
		"status to report the gateway route missing")
	if rt := l.MustExec(t, l.Eng, "ip", "route", "show", "table", "all"); !strings.Contains(rt, "unreachable default table 20035 metric 4294967295") {
		t.Fatalf("no unreachable backstop in the copy table:\n%s", rt)
	}
	table, _, _ := nfc(l, "status", "--state-dir", d.stateDir)
	if !strings.Contains(table, "gateway route(s) missing") {
		t.Fatalf("status table does not say the route is missing:\n%s", table)
	}
	m := scrape(t, l)
	if !strings.Contains(m, `nfclone_session_missing_routes{method="queue",session="q"} 1`) ||
		!strings.Contains(m, `nfclone_session_state{method="queue",session="q",state="waiting"} 1`) ||
		!strings.Contains(m, "nfclone_routing_drift 1") {
		t.Fatalf("metrics do not say the route is missing:\n%s", grepLines(m, "missing_routes")+"\n"+grepLines(m, "session_state")+"\n"+grepLines(m, "drift"))
	}
	pingNoDup(t, l, l.Src, lab.Col2IP, pings, 20*time.Millisecond, "with e1 down")
	c = l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	l.MustExec(t, l.Eng, "ip", "link", "set", "e1", "up")
	took = copiesBackWithin(t, l, c, time.Now(), 5*time.Second, "after e1 came back")
	t.Logf("copies back %s after e1 came back", took.Round(time.Millisecond))
	if r := sessionMissingRoutes(t, l, d, "q"); len(r) != 0 {
		t.Fatalf("status still reports missing routes: %v", r)
	}
	if m := scrape(t, l); !strings.Contains(m, `nfclone_session_missing_routes{method="queue",session="q"} 0`) {
		t.Fatalf("metrics still report the route missing:\n%s", grepLines(m, "missing_routes"))
	}

	// Someone deletes the route by hand: put back by the route event.
	c = l.StartCapture(t, l.Col, "e0", "icmp[0] == 8", lab.Direction("in"))
	l.MustExec(t, l.Eng, "ip", "route", "del", "default", "via", lab.ColIP, "table", "20035")
	took = copiesBackWithin(t, l, c, time.Now(), 5*time.Second, "after the route was deleted by hand")
	t.Logf("copies back %s after the route was deleted", took.Round(time.Millisecond))
	for _, line := range strings.Split(d.Stderr(), "\n") {
		if strings.Contains(line, "routing") {
			t.Log(line)
		}
	}
	d.stop(t)
	if rt := l.MustExec(t, l.Eng, "ip", "route", "show", "table", "all"); strings.Contains(rt, "table 20035") {
		t.Fatalf("copy table left after exit:\n%s", rt)
	}
}

// Issue 11, item 12: `arp: off` on a device that carries other traffic
// (here e1 with its addresses) draws a warning from check, with the key
// path, and the advice to use mac:; check still succeeds.
func TestCheckWarnsARPOffOnBusyDevice(t *testing.T) {
	l := lab.New(t)
	path, _ := writeConfig(t, `
sessions:
  - name: a
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1, arp: off}]
`)
	out, errOut, code := nfc(l, "check", "-c", path)
	if code != 0 {
		t.Fatalf("check: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "warning: sessions[0].targets[0].arp: arp: off sets IFF_NOARP on e1") ||
		!strings.Contains(out, "10.77.2.1/24") || !strings.Contains(out, "use mac:") {
		t.Fatalf("no warning about arp: off on e1:\n%s", out)
	}
}

// Issue 11, item 7: the devices nfclone owns (a created veth pair, the
// VXLAN device of a dup session) are re-created when someone deletes them,
// and mirroring into them resumes; status lists every interface a session
// depends on, those included.
func TestOwnedDevicesRecreated(t *testing.T) {
	lab.RequireTools(t, "tcpdump")
	l := lab.New(t)
	d := startNfclone(t, l, `
sessions:
  - name: own
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets:
      - {kind: device, device: agg0, create: true}
      - {kind: vxlan, remote: "10.77.4.2:4789", vni: 7}
`)
	vx := regexp.MustCompile(`nfcvx[0-9a-f]+`).FindString(l.MustExec(t, l.Eng, "ip", "-o", "link"))
	if vx == "" {
		t.Fatal("no nfcvx device")
	}
	ifaces := func() map[string]map[string]any {
		out := map[string]map[string]any{}
		for _, i := range status(t, l, d)["interfaces"].([]any) {
			m := i.(map[string]any)
			out[m["name"].(string)] = m
		}
		return out
	}
	st := ifaces()
	for _, n := range []string{"e0", "agg0", "agg0-tx", vx} {
		if st[n] == nil || st[n]["present"] != true {
			t.Fatalf("status does not list %s as present: %v", n, st)
		}
	}
	for _, n := range []string{"agg0", "agg0-tx", vx} {
		if st[n]["created"] != true {
			t.Fatalf("status does not say nfclone created %s: %v", n, st[n])
		}
	}
	copies := func(what string) {
		t.Helper()
		c := l.StartCapture(t, l.Eng, "agg0", "icmp[0] == 8", lab.Direction("in"))
		tun := l.StartCapture(t, l.Col2, "e0", "udp port 4789", lab.Direction("in"))
		ping(t, l, l.Src, lab.EngE0IP, pings)
		c.WaitCount(pings, 5*time.Second)
		tun.WaitCount(pings, 5*time.Second)
		requireCount(t, what+": copies on agg0", c.Stop(), echoReq(lab.SrcIP), pings)
		requireCount(t, what+": VXLAN copies at the collector", tun.Stop(), func(p lab.Packet) bool { return p.VXLANVNI == 7 }, pings)
	}
	copies("at start")
	gen := generation(t, l, d)
	l.MustExec(t, l.Eng, "ip", "link", "del", "agg0-tx")
	l.MustExec(t, l.Eng, "ip", "link", "del", vx)
	lab.WaitFor(t, 5*time.Second, func() bool {
		out := l.MustExec(t, l.Eng, "ip", "-o", "link")
		return strings.Contains(out, "agg0-tx@agg0") && strings.Contains(out, vx) && generation(t, l, d) > gen
	}, "nfclone to re-create agg0/agg0-tx and "+vx+" and re-bind")
	copies("after re-creating them")
	l.MustExec(t, l.Eng, "ip", "link", "set", "agg0", "down")
	lab.WaitFor(t, 5*time.Second, func() bool {
		return strings.Contains(linkFlags(t, l, l.Eng, "agg0"), ",UP")
	}, "nfclone to bring agg0 up again")
	copies("after agg0 was set down")
	st = ifaces()
	for _, n := range []string{"agg0", "agg0-tx", vx} {
		if st[n]["present"] != true || st[n]["created"] != true {
			t.Fatalf("status after re-creation: %s %v", n, st[n])
		}
	}
	d.stop(t)
	if out := l.MustExec(t, l.Eng, "ip", "-o", "link"); strings.Contains(out, "agg0") || strings.Contains(out, vx) {
		t.Fatalf("re-created devices left after exit:\n%s", out)
	}
}
