package engine

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/config"
	"github.com/nfclone/nfclone/route"
	"github.com/nfclone/nfclone/rules"
)

// LockFile is the name of the lock file inside state_dir: the process that
// holds an flock on it owns the directory (one nfclone per state_dir).
const LockFile = "lock"

// TablePrefix is the prefix of every nft table name nfclone makes up
// itself (the default table, capture tables). A state file may name a
// table only if it has this prefix or is the configured table.
const TablePrefix = "nfclone"

// ErrRunning marks a state_dir held by another live nfclone.
var ErrRunning = errors.New("nfclone is already running")

// StateDir is a checked state directory, locked for as long as it is open.
type StateDir struct {
	Path    string
	lock    *os.File
	created bool // this process made the directory
}

// OpenStateDir checks state directory path and takes its lock (held until
// Close). With create, a missing directory is made (mode 0700); without,
// a missing directory gives (nil, nil): there is nothing to act on.
//
// The directory must belong to the running user and be writable by no one
// else, and must not be a symlink: otherwise whoever controls it could
// plant a state file that nfclone, as root, would act on. If another
// process holds the lock, the error wraps ErrRunning and names its pid.
func OpenStateDir(path string, create bool) (*StateDir, error) {
	if !filepath.IsAbs(path) {
		return nil, hostErr("state_dir %q must be an absolute path", path)
	}
	path = filepath.Clean(path)
	created := false
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, hostErr("creating state_dir %s: %v", path, err)
		}
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, hostErr("creating state_dir %s: %v", path, err)
		} else if err == nil {
			created = true
		}
	}
	if err := checkPrivate(path, true); err != nil {
		return nil, hostErr("refusing state_dir: %v", err)
	}
	lp := filepath.Join(path, LockFile)
	// The lock file may be removed by a holder that exits cleanly: a lock
	// taken on a file no longer at lp is retaken on the new one.
	for try := 0; ; try++ {
		d, err := lockAt(path, lp)
		if err == nil {
			if cur, serr := os.Lstat(lp); serr == nil && os.SameFile(cur, mustStat(d.lock)) {
				d.created = created
				return d, nil
			}
			d.lock.Close()
			if try < 5 {
				continue
			}
			return nil, hostErr("locking %s: the lock file keeps being replaced", lp)
		}
		return nil, err
	}
}

func mustStat(f *os.File) fs.FileInfo {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	return fi
}

// holderWait bounds how long a lock file held but still empty is read
// again: its holder writes its pid right after taking the lock.
const holderWait = 200 * time.Millisecond

// lockHolder reads what the holder of lock file f wrote (its pid), polling
// while the file is empty for at most holderWait.
func lockHolder(f *os.File) string {
	b := make([]byte, 64)
	for deadline := time.Now().Add(holderWait); ; time.Sleep(5 * time.Millisecond) {
		n, _ := f.ReadAt(b, 0)
		if h := strings.TrimSpace(string(b[:n])); h != "" || time.Now().After(deadline) {
			return h
		}
	}
}

// lockAt opens (creating) and locks lock file lp of state directory path.
func lockAt(path, lp string) (*StateDir, error) {
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, hostErr("refusing state_dir: %s is a symlink", lp)
		}
		return nil, hostErr("opening lock file: %v", err)
	}
	if err := checkPrivateFile(f, lp); err != nil {
		f.Close()
		return nil, hostErr("refusing state_dir: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := lockHolder(f)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			if holder == "" {
				holder = "unknown"
			}
			return nil, fmt.Errorf("%w: %w (pid %s holds %s); stop it first", ErrHost, ErrRunning, holder, lp)
		}
		return nil, hostErr("locking %s: %v", lp, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" in network namespace "+config.NetNS()+"\n"), 0)
	}
	return &StateDir{Path: path, lock: f}, nil
}

// Release removes the lock file, and the directory if this process made
// it and it is empty, then releases the lock: a clean exit leaves nothing
// behind. (A process that opened the old lock file meanwhile sees it gone
// from its path and retries on a new one.)
func (d *StateDir) Release() error {
	if d == nil || d.lock == nil {
		return nil
	}
	_ = os.Remove(filepath.Join(d.Path, LockFile))
	if d.created {
		_ = os.Remove(d.Path) // only if empty
	}
	return d.Close()
}

// Done ends this process's use of the directory: Release when no state
// file is left in it (nothing for a later run to undo), else Close.
func (d *StateDir) Done() {
	if d == nil {
		return
	}
	if _, err := os.Lstat(filepath.Join(d.Path, StateFile)); errors.Is(err, fs.ErrNotExist) {
		_ = d.Release()
		return
	}
	_ = d.Close()
}

// Close releases the lock; the lock file stays.
func (d *StateDir) Close() error {
	if d == nil || d.lock == nil {
		return nil
	}
	err := d.lock.Close()
	d.lock = nil
	return err
}

// checkPrivate refuses a path that is a symlink, not a directory (dir) or
// regular file (!dir), not owned by the running user, or writable by
// group or others.
func checkPrivate(path string, dir bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return private(fi, path, dir)
}

func checkPrivateFile(f *os.File, path string) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return private(fi, path, false)
}

func private(fi fs.FileInfo, path string, dir bool) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink", path)
	case dir && !fi.IsDir():
		return fmt.Errorf("%s is not a directory", path)
	case !dir && !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot read its owner", path)
	}
	if uid := uint32(os.Geteuid()); st.Uid != uid {
		return fmt.Errorf("%s belongs to uid %d, not to this user (uid %d)", path, st.Uid, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others (mode %#o)", path, fi.Mode().Perm())
	}
	return nil
}

// PrivateStateDir makes a fresh state directory (mode 0700, random name)
// for a one-shot command (capture) under parent, or under
// $NFCLONE_STATE_DIR, /run (as root) or the temporary directory when parent
// is "". The parent must belong to root or this user and be writable by no
// one else unless it is sticky (like /tmp).
func PrivateStateDir(parent, prefix string) (string, error) {
	if parent == "" {
		parent = os.Getenv("NFCLONE_STATE_DIR")
	}
	if parent == "" {
		parent = os.TempDir()
		if fi, err := os.Stat("/run"); err == nil && fi.IsDir() && os.Geteuid() == 0 {
			parent = "/run"
		}
	}
	if !filepath.IsAbs(parent) {
		return "", hostErr("state directory parent %q must be an absolute path", parent)
	}
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", hostErr("creating %s: %v", parent, err)
	}
	fi, err := os.Lstat(parent)
	if err != nil {
		return "", hostErr("%v", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
		return "", hostErr("refusing %s for state: not a directory (or a symlink)", parent)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 && st.Uid != uint32(os.Geteuid()) {
		return "", hostErr("refusing %s for state: it belongs to uid %d", parent, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return "", hostErr("refusing %s for state: writable by others and not sticky (mode %#o)", parent, fi.Mode().Perm())
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", hostErr("creating a state directory: %v", err)
	}
	return dir, nil
}

// reservedTables are routing tables nfclone never adds routes to.
var reservedTables = map[uint32]bool{0: true, unix.RT_TABLE_DEFAULT: true, unix.RT_TABLE_MAIN: true, unix.RT_TABLE_LOCAL: true}

// Check refuses a state file that names what nfclone never makes: a table
// without nfclone's prefix (other than the configured one), a state of
// another network namespace, links of a kind nfclone does not create,
// rules without a mark, routes in the main, local or default tables.
func (s *State) Check(table string) error {
	if s.Table != "" && s.Table != table && !strings.HasPrefix(s.Table, TablePrefix) {
		return fmt.Errorf("it names table %q, which is neither %q nor one of nfclone's (%s*)", s.Table, table, TablePrefix)
	}
	for i, c := range s.Journal {
		if err := checkChange(c); err != nil {
			return fmt.Errorf("journal[%d] %s: %v", i, c.Op, err)
		}
	}
	return nil
}

func checkChange(c route.Change) error {
	switch {
	case c.Op == route.OpLinkCreated && c.Link != nil:
		l := c.Link
		switch {
		case l.Kind != "veth" && l.Kind != "vxlan":
			return fmt.Errorf("link %q of kind %q: nfclone creates only veth and vxlan links", l.Name, l.Kind)
		case l.Name == "" || (l.Kind == "veth" && l.Peer == ""):
			return fmt.Errorf("link without a name or peer")
		case !c.Pending && l.Index <= 0:
			return fmt.Errorf("link %q without its ifindex", l.Name)
		}
	case c.Op == route.OpLinkFlags && c.Flags != nil:
		if c.Flags.Mask&^uint32(unix.IFF_NOARP|unix.IFF_PROMISC) != 0 {
			return fmt.Errorf("flags %#x on %s: nfclone changes only NOARP and PROMISC", c.Flags.Mask, c.Flags.Device)
		}
	case c.Op == route.OpNeighbour && c.Neighbour != nil:
	case c.Op == route.OpRouteAdded && c.Route != nil:
		if reservedTables[c.Route.Table] {
			return fmt.Errorf("route in table %d: nfclone adds routes only to tables of its own", c.Route.Table)
		}
	case c.Op == route.OpRuleAdded && c.Rule != nil:
		// A device route's rule selects the lookups of its made-up next
		// hop instead of a mark.
		nextHop := c.Rule.To.IsSingleIP() && rules.IsDeviceNextHop(c.Rule.To.Addr())
		if c.Rule.Mark == 0 && !nextHop || reservedTables[c.Rule.Table] {
			return fmt.Errorf("rule %s: nfclone adds only fwmark rules, and rules to its made-up next hops, to tables of its own", c.Rule)
		}
	case c.Op == route.OpLocalMoved && c.Local != nil:
	default:
		return fmt.Errorf("unknown or empty entry")
	}
	return nil
}
