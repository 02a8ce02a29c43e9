package rules

import (
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/internal/netnstest"
)

var (
	reNftComment = regexp.MustCompile(`\s*#.*$`)
	reNftCounter = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	reNftCgroup  = regexp.MustCompile(`socket cgroupv2 level (\d+) ("[^"]*"|\d+)`)
)

// normalizeListing drops comments, warnings, blank lines and counter values,
// and the cgroup of `socket cgroupv2` (nft lists the id as a number when it
// cannot find the path under /sys/fs/cgroup).
func normalizeListing(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = reNftComment.ReplaceAllString(line, "")
		line = reNftCounter.ReplaceAllString(line, "counter")
		line = reNftCgroup.ReplaceAllString(line, "socket cgroupv2 level $1 CGROUP")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "Warning:") {
			continue
		}
		out = append(out, strings.TrimRight(line, " \t"))
	}
	return strings.Join(out, "\n")
}

// TestSelectorsInKernel loads the selector goldens into a kernel (a
// namespace of their own, with the devices they name) and compares nft's
// listing with Render: the kernel takes every selector expression and nft
// reads them back as rendered.
func TestSelectorsInKernel(t *testing.T) {
	netnstest.RequireRoot(t, "nftables in a network namespace")
	for _, name := range []string{"select_l3", "select_netdev", "select_scope", "annotate", "routed"} {
		t.Run(name, func(t *testing.T) {
			ns := netnstest.New(t, "nfcsel")
			for _, d := range []string{"e0", "e1", "e2", "e3", "e4", "e5"} {
				ns.Sh(t, "ip link add "+d+" type veth peer name p"+d)
			}
			cfg := loadConfig(t, name)
			for _, s := range cfg.Sessions {
				for _, tg := range s.Targets {
					if tg.OwnVXLAN() { // the VXLAN device nfclone would create
						ap := tg.RemoteAddrs[0]
						ns.Sh(t, fmt.Sprintf("ip link add %s type vxlan id %d remote %s dstport %d", VXLANDevice(tg), *tg.VNI, ap.Addr(), ap.Port()))
					}
				}
			}
			var applyErr error
			var rs *Ruleset
			ns.Run(func() {
				idx := func(n string) uint32 {
					if i, err := net.InterfaceByName(n); err == nil {
						return uint32(i.Index)
					}
					return 0
				}
				var err error
				if rs, err = Compile(cfg, Options{IfIndex: idx, CgroupID: fixedCgroupID}); err != nil {
					applyErr = err
					return
				}
				ap, err := NewApplier(cfg.Table)
				if err != nil {
					applyErr = err
					return
				}
				applyErr = ap.Apply(rs, nil)
				if applyErr != nil {
					_ = ap.Close()
					return
				}
				t.Cleanup(func() { ns.Run(func() { _ = ap.Close() }) })
			})
			if applyErr != nil {
				t.Fatalf("applying %s: %v", name, applyErr)
			}
			out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "ruleset").CombinedOutput()
			if err != nil {
				t.Fatalf("nft list ruleset: %v\n%s", err, out)
			}
			if got, want := normalizeListing(string(out)), normalizeListing(rs.Render()); got != want {
				t.Errorf("nft list differs from render:\n%s", lineDiff(want, got))
			}
		})
	}
}
