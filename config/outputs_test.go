package config

import (
	"reflect"
	"testing"
)

func TestOutputTargetsValid(t *testing.T) {
	cfg, err := Parse([]byte(`
sessions:
  - name: s
    method: log
    sources: [{interface: e0}]
    dedup: 50ms
    targets:
      - {kind: erspan, remote: 10.77.4.2, session_id: 7}
      - {kind: erspan, remote: "fd77:4::2", version: 3, session_id: 1023}
      - {kind: pcap-over-ip, listen: ":57012"}
      - {kind: pcap-over-ip, listen: "10.77.4.1:57012", allow: [10.77.0.0/16, any], format: pcapng}
      - {kind: device, device: e1, vlan: 100}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := cfg.Sessions[0].Targets
	if ts[0].Version != DefaultERSPAN || ts[1].Version != 3 || *ts[0].SessionID != 7 || *ts[4].VLAN != 100 {
		t.Fatalf("%+v", ts)
	}
	if ap, err := ParsePcapOverIPListen(ts[2].Listen); err != nil || ap.String() != "127.0.0.1:57012" {
		t.Fatal(ap, err)
	}
}

func TestOutputTargetsProblems(t *testing.T) {
	got := problemLines(t, `
sessions:
  - name: d
    sources: [{interface: e0, direction: ingress}]
    dedup: 50ms
    targets:
      - {kind: erspan, remote: 10.77.4.2, session_id: 1}
      - {kind: device, device: e1, vlan: 4095}
      - {kind: device, device: e2, vlan: 100}
  - name: q
    method: queue
    sources: [{interface: e0, direction: ingress}]
    dedup: 1h
    targets:
      - {kind: erspan, remote: "10.77.4.2:4789", version: 1, session_id: 1024}
      - {kind: erspan}
      - {kind: pcap-over-ip, listen: "10.77.4.1:57012", vlan: 3}
      - {kind: pcap-over-ip, listen: "x:1", allow: [10.0.0.0/33], format: json}
      - {kind: gateway, gateway: 10.77.2.2, device: e1, session_id: 1, listen: ":1"}
`, nil)
	want := []string{
		`sessions[0].dedup: method dup copies in the kernel, which cannot de-duplicate; use method queue or log`,
		`sessions[0].targets[0].kind: erspan is not available with method dup: this kernel has no gre or erspan link kind to feed; use method queue or log (nfclone builds ERSPAN in userspace)`,
		`sessions[0].targets[1].vlan: 4095 is out of range 1-4094`,
		`sessions[0].targets[2].vlan: method dup cannot tag copies (the kernel's dup pushes no 802.1Q tag and this kernel has no vlan link kind to mirror into); use method queue or log, which tag in userspace`,
		`sessions[1].dedup: "1h" is out of range 1ms-10s`,
		`sessions[1].targets[0].remote: "10.77.4.2:4789" is not an IP address (ERSPAN is GRE: no port)`,
		`sessions[1].targets[0].session_id: 1024 is out of range 0-1023`,
		`sessions[1].targets[0].version: 1 is not 2 (ERSPAN type II) or 3 (type III)`,
		`sessions[1].targets[1].remote: is required (the collector's IP address, no port: ERSPAN is GRE)`,
		`sessions[1].targets[1].session_id: is required (0-1023)`,
		`sessions[1].targets[2].allow: listen 10.77.4.1:57012 is reachable from other hosts: say who may read the copies (allow: [CIDR, ...], or [any])`,
		`sessions[1].targets[2].vlan: is not a field of pcap-over-ip targets (only device)`,
		`sessions[1].targets[3].allow[0]: "10.0.0.0/33" is not a CIDR, an address or any`,
		`sessions[1].targets[3].format: "json" is not pcap or pcapng`,
		`sessions[1].targets[3].listen: "x:1": "x" is not an IP address`,
		`sessions[1].targets[4].listen: is not a field of gateway targets (only pcap-over-ip)`,
		`sessions[1].targets[4].session_id: is not a field of gateway targets (only erspan)`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got: %q\nwant: %q", got, want)
	}
}

func TestPcapOverIPListenTwice(t *testing.T) {
	got := problemLines(t, `
metrics: {listen: "127.0.0.1:9464"}
sessions:
  - name: a
    method: log
    sources: [{interface: e0}]
    targets: [{kind: pcap-over-ip, listen: ":57012"}, {kind: pcap-over-ip, listen: ":9464"}]
  - name: b
    method: queue
    sources: [{interface: e0}]
    targets: [{kind: pcap-over-ip, listen: "127.0.0.1:57012"}]
`, nil)
	want := []string{
		`sessions[0].targets[1].listen: 127.0.0.1:9464 is already the address of metrics.listen`,
		`sessions[1].targets[0].listen: 127.0.0.1:57012 is already the address of sessions[0].targets[0].listen`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems:\n got: %q\nwant: %q", got, want)
	}
}
