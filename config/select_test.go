package config

import (
	"reflect"
	"strings"
	"testing"
)

const selBase = `
sessions:
  - name: s
    method: log
    sources: [{interface: e0}]
    targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]
`

func TestSelectorsTyped(t *testing.T) {
	c, err := Parse([]byte(selBase+`    first_packets: 10
    first_bytes: 64KiB
    sample_flows: 4
    flow_rate: 200/s
    cgroup: /system.slice//nginx.service/
    user: 1000
    priority: 7
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sessions[0]
	uid := uint32(1000)
	want := Selectors{FirstPackets: 10, FirstBytes: 64 << 10, SampleFlows: 4, FlowRate: &Rate{Count: 200, Unit: "second"},
		Cgroup: "system.slice/nginx.service", UID: &uid, Priority: 7}
	if !reflect.DeepEqual(s.Select, want) {
		t.Errorf("Select = %+v, want %+v", s.Select, want)
	}
	if s.Select.CgroupLevel() != 2 {
		t.Errorf("CgroupLevel = %d, want 2", s.Select.CgroupLevel())
	}
	if !s.HostOnly {
		t.Error("cgroup and user must imply host_only")
	}
}

func TestSelectorsNone(t *testing.T) {
	c, err := Parse([]byte(selBase), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Sessions[0]; !reflect.DeepEqual(s.Select, Selectors{}) || s.HostOnly {
		t.Errorf("a session without selectors: Select %+v, host_only %v", s.Select, s.HostOnly)
	}
}

func TestSelectorProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"negative first_packets", selBase + "    first_packets: -1\n", []string{"sessions[0].first_packets: -1 must not be negative"}},
		{"bad first_bytes", selBase + "    first_bytes: lots\n", []string{"sessions[0].first_bytes: \"lots\" is not a size"}},
		{"sample_flows range", selBase + "    sample_flows: 2000000\n", []string{"sessions[0].sample_flows: 2000000 is out of range"}},
		{"flow_rate", selBase + "    flow_rate: fast\n", []string{"sessions[0].flow_rate: \"fast\" is not a rate"}},
		{"cgroup dots", selBase + "    cgroup: a/../b\n", []string{"sessions[0].cgroup: \"a/../b\": give a cgroup path below"}},
		{"cgroup root", selBase + "    cgroup: /\n", []string{"sessions[0].cgroup: \"/\" is the root cgroup"}},
		{"unknown user", selBase + "    user: no-such-user-nfclone\n", []string{"sessions[0].user: \"no-such-user-nfclone\" is not a user of this host"}},
		{"priority range", selBase + "    priority: 40000\n", []string{"sessions[0].priority: 40000 is out of range 1-32766"}},
		{"cgroup with netdev dup", `
sessions:
  - name: s
    sources: [{interface: e0}]
    cgroup: a.slice
    targets: [{kind: device, device: e1}]
`, []string{"sessions[0].cgroup: needs the packet's socket"}},
		{"first_packets with netdev dup", `
sessions:
  - name: s
    sources: [{interface: e0}]
    first_packets: 3
    targets: [{kind: device, device: e1}]
`, []string{"sessions[0].first_packets: reads conntrack's counters"}},
		{"same priority twice", `
sessions:
  - {name: a, method: log, priority: 5, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: b, method: log, priority: 5, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
`, []string{"sessions[1].priority: 5 is already the priority of sessions[0] (a)"}},
		{"cgroup session before one that cannot test it", `
sessions:
  - {name: a, method: log, priority: 1, cgroup: a.slice, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
  - {name: b, method: log, priority: 2, sources: [{interface: e0}], targets: [{kind: gateway, gateway: 10.77.2.2, device: e1}]}
`, []string{"sessions[1].priority: 2 comes after sessions[0] (a), which has a cgroup"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problemLines(t, tc.yaml, nil)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d starting %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %q, want it to start %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func TestParseCgroup(t *testing.T) {
	for in, want := range map[string]string{"a": "a", "/a/b/": "a/b", "a//b": "a/b", " system.slice/x.service ": "system.slice/x.service"} {
		if got, err := ParseCgroup(in); err != nil || got != want {
			t.Errorf("ParseCgroup(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCaptureSelectors(t *testing.T) {
	c, err := Capture(CaptureOptions{Interfaces: []string{"e0"}, Output: "-", FirstPackets: 5, User: "0", Cgroup: "x.slice"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sessions[0].Select
	if s.FirstPackets != 5 || s.UID == nil || *s.UID != 0 || s.Cgroup != "x.slice" || !c.Sessions[0].HostOnly {
		t.Errorf("capture selectors: %+v", s)
	}
	_, err = Capture(CaptureOptions{Interfaces: []string{"e0"}, Output: "-", FirstPackets: -2}, 1)
	if err == nil || !strings.Contains(err.Error(), "--first-packets: -2") {
		t.Errorf("bad --first-packets: %v", err)
	}
}
