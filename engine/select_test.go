package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/rules"
)

func TestCgroup2MountIn(t *testing.T) {
	v1only := `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
	if _, err := cgroup2MountIn(strings.NewReader(v1only)); !errors.Is(err, ErrNoCgroup2) {
		t.Errorf("v1 controllers only: %v, want ErrNoCgroup2", err)
	}
	both := v1only + `40 22 0:40 /sub /mnt/part rw - cgroup2 cgroup2 rw
41 22 0:40 / /tmp/my\040cg2 rw,relatime shared:9 - cgroup2 none rw,nsdelegate
`
	got, err := cgroup2MountIn(strings.NewReader(both))
	if err != nil || got != "/tmp/my cg2" {
		t.Errorf("got %q, %v; want the mount of the hierarchy's root, unescaped", got, err)
	}
}

func TestCgroupIDs(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &config.Config{Sessions: []config.Session{
		{Select: config.Selectors{Cgroup: "a/b"}}, {Select: config.Selectors{Cgroup: "gone"}}, {},
	}}
	ids := cgroupIDs(c, root)
	if len(ids) != 2 || ids["a/b"] == 0 || ids["gone"] != 0 {
		t.Errorf("ids %v", ids)
	}
	if ids := cgroupIDs(c, ""); ids["a/b"] != 0 {
		t.Errorf("without a cgroup2 mount every id is 0: %v", ids)
	}
}

func TestSkippedCounts(t *testing.T) {
	m := map[string]rules.CounterValue{rules.CounterFirstPackets: {Packets: 3}, rules.CounterPriority: {Packets: 2}, rules.CounterCopied: {Packets: 9}}
	sk := skippedCounts(m)
	if sk.FirstPackets != 3 || sk.Priority != 2 || sk.Total() != 5 {
		t.Errorf("%+v", sk)
	}
}
