package engine

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/route/routetest"
)

const nobody = 65534

// plant writes a state file naming a victim table and a victim rule and
// route, as anyone able to write to the directory could.
func plant(t *testing.T, dir string) {
	t.Helper()
	st := &State{PID: 999999, Table: "victim", Journal: route.Journal{
		{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: route.FamilyOf(netip.MustParseAddr("10.0.0.1")), Pref: 50, Mark: 7, Table: 77}},
	}}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A fake kernel with a victim rule; refusing must leave it as it was.
func victimKernel() *routetest.Fake {
	k := routetest.NewFake()
	k.AddLink("e0", nil)
	k.AddRawRule(route.RuleInfo{PolicyRule: route.PolicyRule{Family: route.FamilyOf(netip.MustParseAddr("10.0.0.1")), Pref: 50, Mark: 7, Table: 77}, Mask: 0xffffffff, Action: unix.FR_ACT_TO_TBL})
	return k
}

func requireRefused(t *testing.T, dir, want string) {
	t.Helper()
	k := victimKernel()
	before := k.Snapshot().String()
	c := config.Default()
	c.StateDir = dir
	err := Reconcile(&c, k, discard())
	if err == nil || !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reconcile: %v; want a host error containing %q", err, want)
	}
	if after := k.Snapshot().String(); after != before {
		t.Fatalf("the refused state file changed the kernel:\n%s\n--- before:\n%s", after, before)
	}
	if _, err := os.Lstat(filepath.Join(dir, StateFile)); err != nil {
		t.Fatalf("the refused state file was removed: %v", err)
	}
}

func TestStateDirWritableByOthersRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	plant(t, dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	requireRefused(t, dir, "writable by others")
}

func TestStateDirSymlinkRefused(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	plant(t, real)
	link := filepath.Join(base, "state")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	requireRefused(t, link, "symlink")
}

func TestStateFileSymlinkRefused(t *testing.T) {
	base := t.TempDir()
	other := filepath.Join(base, "other")
	plant(t, other)
	dir := filepath.Join(base, "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, StateFile), filepath.Join(dir, StateFile)); err != nil {
		t.Fatal(err)
	}
	requireRefused(t, dir, "symlink")
}

func TestStateFileWritableByOthersRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	plant(t, dir)
	if err := os.Chmod(filepath.Join(dir, StateFile), 0o666); err != nil {
		t.Fatal(err)
	}
	requireRefused(t, dir, "writable by others")
}

func TestStateOwnedBySomeoneElseRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	t.Run("dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		plant(t, dir)
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		requireRefused(t, dir, "belongs to uid 65534")
	})
	t.Run("file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		plant(t, dir)
		if err := os.Chown(filepath.Join(dir, StateFile), nobody, nobody); err != nil {
			t.Fatal(err)
		}
		requireRefused(t, dir, "belongs to uid 65534")
	})
}

// A private state file that names a table nfclone never makes is refused
// too: it is not nfclone's to remove.
func TestStateNamingForeignTableRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	plant(t, dir)
	requireRefused(t, dir, `table "victim"`)
}

func TestStateCheck(t *testing.T) {
	v4, v6 := route.FamilyOf(netip.MustParseAddr("10.0.0.1")), route.FamilyOf(netip.MustParseAddr("fe80::1"))
	ok := []State{
		{Table: "nfclone"},
		{Table: "mirror"}, // the configured table
		{Table: "nfclone_cap123"},
		{Table: "nfclone", Journal: route.Journal{
			{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "agg0-tx", Index: 7, Kind: "veth", Peer: "agg0", PeerIndex: 6}},
			{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, Mark: 0x4e44, Table: 20035}},
			{Op: route.OpRouteAdded, Route: &route.Route{Family: v4, Table: 20035, Gateway: netip.MustParseAddr("10.0.0.1"), Device: "e1"}},
			{Op: route.OpLocalMoved, Local: &route.LocalMove{Family: v4}},
		}},
		// A kernel-routed device target's rules: its made-up next hops'
		// lookups, no mark (what every default log or queue session to a
		// device writes; the state file of one was refused after kill -9).
		{Table: "nfclone", Journal: route.Journal{
			{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, To: netip.MustParsePrefix("169.254.77.1/32"), Table: 21035}},
			{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v6, Pref: 100, To: netip.MustParsePrefix("fe80::4e43:1/128"), Table: 21035}},
			{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, To: netip.MustParsePrefix("169.254.78.3/32"), Table: 21290}},
		}},
	}
	for _, s := range ok {
		if err := s.Check("mirror"); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := map[string]State{
		"table":                    {Table: "filter"},
		"link kind":                {Table: "nfclone", Journal: route.Journal{{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "eth0", Index: 2, Kind: "device"}}}},
		"no ifindex":               {Table: "nfclone", Journal: route.Journal{{Op: route.OpLinkCreated, Link: &route.CreatedLink{Name: "vx", Kind: "vxlan"}}}},
		"main route":               {Table: "nfclone", Journal: route.Journal{{Op: route.OpRouteAdded, Route: &route.Route{Family: v4, Table: 254, Device: "e1"}}}},
		"rule to another address":  {Table: "nfclone", Journal: route.Journal{{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, To: netip.MustParsePrefix("10.0.0.1/32"), Table: 21035}}}},
		"rule to a next hop's net": {Table: "nfclone", Journal: route.Journal{{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, To: netip.MustParsePrefix("169.254.77.0/24"), Table: 21035}}}},
		"next hop rule in main":    {Table: "nfclone", Journal: route.Journal{{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 100, To: netip.MustParsePrefix("169.254.77.1/32"), Table: 254}}}},
		"local rule":               {Table: "nfclone", Journal: route.Journal{{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: v4, Pref: 0, Table: 255}}}},
		"flags":                    {Table: "nfclone", Journal: route.Journal{{Op: route.OpLinkFlags, Flags: &route.FlagChange{Device: "e0", Index: 2, Mask: 1}}}},
		"empty entry":              {Table: "nfclone", Journal: route.Journal{{Op: route.OpRuleAdded}}},
	}
	for name, s := range bad {
		if err := s.Check("mirror"); err == nil {
			t.Errorf("%s: accepted %+v", name, s)
		}
	}
}

// One process per state_dir: the second open fails at once, naming the
// holder's pid; after Close it can be taken again.
func TestStateDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	a, err := OpenStateDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state_dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	_, err = OpenStateDir(dir, true)
	if !errors.Is(err, ErrRunning) || !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second open: %v; want ErrRunning naming pid %d", err, os.Getpid())
	}
	c := config.Default()
	c.StateDir = dir
	if err := Reconcile(&c, routetest.NewFake(), discard()); !errors.Is(err, ErrRunning) {
		t.Fatalf("flush while locked: %v; want ErrRunning", err)
	}
	a.Close()
	b, err := OpenStateDir(dir, true)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	b.Close()
}

func TestOpenStateDirMissing(t *testing.T) {
	d, err := OpenStateDir(filepath.Join(t.TempDir(), "none"), false)
	if d != nil || err != nil {
		t.Fatalf("missing dir without create: %v, %v; want nil, nil", d, err)
	}
}

func TestPrivateStateDir(t *testing.T) {
	parent := t.TempDir()
	a, err := PrivateStateDir(parent, "nfclone-capture-")
	if err != nil {
		t.Fatal(err)
	}
	b, err := PrivateStateDir(parent, "nfclone-capture-")
	if err != nil {
		t.Fatal(err)
	}
	if a == b || !strings.HasPrefix(filepath.Base(a), "nfclone-capture-") {
		t.Fatalf("not fresh: %s %s", a, b)
	}
	if err := checkPrivate(a, true); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(parent, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := PrivateStateDir(open, "x-"); err == nil || !errors.Is(err, ErrHost) {
		t.Fatalf("parent writable by all, not sticky: %v; want refused", err)
	}
}

// A state file of another network namespace is refused by every command
// that reads it (run, flush) and left in place: its routing changes can be
// undone only there.
func TestStateOfAnotherNetnsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st := &State{PID: 999999, Table: "nfclone", NetNS: "net:[1]", Journal: route.Journal{
		{Op: route.OpRuleAdded, Rule: &route.PolicyRule{Family: route.FamilyOf(netip.MustParseAddr("10.0.0.1")), Pref: 50, Mark: 7, Table: 77}},
	}}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	requireRefused(t, dir, "belongs to network namespace net:[1]")
}

// A clean exit leaves nothing: the lock file goes, and the directory too if
// this process made it; with a state file left, both stay.
func TestStateDirDone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	d, err := OpenStateDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	d.Done()
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state_dir made by this process left after a clean exit: %v", err)
	}
	d, err = OpenStateDir(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteState(dir, &State{PID: 1, Table: "nfclone"}); err != nil {
		t.Fatal(err)
	}
	d.Done()
	if _, err := os.Lstat(filepath.Join(dir, LockFile)); err != nil {
		t.Fatalf("with a state file left, the lock file should stay: %v", err)
	}
	// The next holder takes it again.
	d, err = OpenStateDir(dir, false)
	if err != nil || d == nil {
		t.Fatalf("reopen: %v", err)
	}
	d.Close()
}

// A holder that has taken the lock but not yet written its pid is named
// all the same (CI: two runs started together, the loser read an empty
// file and said "pid unknown").
func TestStateDirLockHolderNotYetWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	written := make(chan struct{})
	go func() {
		defer close(written)
		time.Sleep(20 * time.Millisecond) // the holder, between its lock and its write
		_, _ = f.WriteAt([]byte("4242 in network namespace x\n"), 0)
	}()
	_, err = OpenStateDir(dir, true)
	<-written
	if !errors.Is(err, ErrRunning) || !strings.Contains(err.Error(), "pid 4242 in network namespace x") {
		t.Fatalf("open while the holder writes: %v; want ErrRunning naming pid 4242", err)
	}
}
