package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/rules"
)

// skippedCounts reads what each selector kept from being copied out of a
// session's rule counters.
func skippedCounts(m map[string]rules.CounterValue) pipeline.Skipped {
	return pipeline.Skipped{
		Priority:     m[rules.CounterPriority].Packets,
		Scope:        m[rules.CounterScope].Packets,
		FirstPackets: m[rules.CounterFirstPackets].Packets,
		FirstBytes:   m[rules.CounterFirstBytes].Packets,
		SampleFlows:  m[rules.CounterSampleFlows].Packets,
		FlowRate:     m[rules.CounterFlowRate].Packets,
	}
}

// selectorNeeds adds the kernel features a session's selectors need.
func selectorNeeds(sel config.Selectors, need map[string]bool) {
	if sel.Conntrack() {
		need[rules.FeatCtCount] = true
	}
	if sel.SampleFlows > 1 {
		need[rules.FeatSymhash] = true
	}
	if sel.FlowRate != nil {
		need[rules.FeatDynset] = true
	}
	if sel.Cgroup != "" {
		need[rules.FeatSocket] = true
	}
	if sel.UID != nil {
		need[rules.FeatSkuid] = true
	}
}

// cgroupPoll is how often the ids of the configured cgroups are read: a
// cgroup created, removed or re-created (a restarted service gets a new id)
// is followed within this time, without a reload.
const cgroupPoll = time.Second

// Cgroup2Mount finds where the cgroup2 file system is mounted, from
// /proc/self/mountinfo (the first cgroup2 mount).
func Cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("finding the cgroup2 mount: %w", err)
	}
	defer f.Close()
	return cgroup2MountIn(f)
}

// ErrNoCgroup2 says that no cgroup2 file system is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 file system is mounted (none in /proc/self/mountinfo): sessions with a cgroup need cgroup v2, e.g. mount -t cgroup2 none /sys/fs/cgroup")

// cgroup2MountIn reads mountinfo lines: "36 25 0:31 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw,...".
func cgroup2MountIn(r io.Reader) (string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		if fs := strings.Fields(post); len(fs) == 0 || fs[0] != "cgroup2" {
			continue
		}
		fs := strings.Fields(pre)
		if len(fs) < 5 || fs[3] != "/" {
			continue // a bind mount of a part of the hierarchy: paths would not start at the root
		}
		return unescapeMountinfo(fs[4]), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading mountinfo: %w", err)
	}
	return "", ErrNoCgroup2
}

// unescapeMountinfo undoes the octal escapes of mountinfo (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupPaths are the cgroups the config's sessions select.
func cgroupPaths(c *config.Config) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range c.Sessions {
		if p := s.Select.Cgroup; p != "" && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// cgroupIDs reads the id of each cgroup the config selects: the inode of
// its directory below the cgroup2 mount, 0 when it does not exist. The
// kernel's socket expression compares this id.
func cgroupIDs(c *config.Config, root string) map[string]uint64 {
	out := map[string]uint64{}
	for _, p := range cgroupPaths(c) {
		var st unix.Stat_t
		if root != "" && unix.Stat(filepath.Join(root, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			out[p] = st.Ino
		} else {
			out[p] = 0
		}
	}
	return out
}

// cgroupRoot is the cgroup2 mount when the config selects cgroups ("" when
// it selects none); none mounted is a host error.
func cgroupRoot(c *config.Config) (string, error) {
	if len(cgroupPaths(c)) == 0 {
		return "", nil
	}
	root, err := Cgroup2Mount()
	if err != nil {
		return "", hostErr("cgroup: %v", err)
	}
	return root, nil
}

// CgroupCheck reports, for `check`, where the config's cgroups are and
// which do not exist yet (their sessions copy nothing until they do).
func CgroupCheck(w io.Writer, c *config.Config) error {
	root, err := cgroupRoot(c)
	if err != nil || root == "" {
		return err
	}
	ids := cgroupIDs(c, root)
	for _, p := range cgroupPaths(c) {
		if ids[p] == 0 {
			fmt.Fprintf(w, "cgroup %s: does not exist yet under %s (its sessions copy nothing until it does; followed without a reload)\n", p, root)
		} else {
			fmt.Fprintf(w, "cgroup %s: id %d under %s\n", p, ids[p], root)
		}
	}
	return nil
}

// recgroup re-applies the running config when the id of a cgroup it
// selects changed (created, removed, re-created).
func (e *Engine) recgroup() {
	rt := e.rt
	if rt.cfg == nil || len(rt.cgroups) == 0 {
		return
	}
	ids := rt.h.cgroups(rt.cfg, rt.cgroupRoot)
	changed := false
	for p, id := range ids {
		if old := rt.cgroups[p]; old != id {
			changed = true
			e.Log.Info("cgroup changed", "cgroup", p, "id", id, "was", old)
		}
	}
	if !changed {
		return
	}
	if err := e.apply(rt.cfg, true); err != nil {
		e.Log.Error("re-applying after a cgroup change", "err", err)
	}
}
