package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nfclone/nfclone/route"
)

// StateFile is the name of the state file inside state_dir.
const StateFile = "state.json"

// State is what a running nfclone changed, written before and after every
// change so that a killed run can be undone (`nfclone flush`, or the next
// start).
type State struct {
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Table   string    `json:"table"`
	// NetNS is the network namespace the changes were made in
	// ("net:[4026531840]"): every command refuses the state of another.
	NetNS   string        `json:"netns,omitempty"`
	Journal route.Journal `json:"journal"`
}

// WriteState replaces the state file atomically (mode 0600, dir 0700).
func WriteState(dir string, s *State) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state_dir %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("writing state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("replacing state file: %w", err)
	}
	return nil
}

// ReadState reads the state file; (nil, nil) when there is none. It is
// read only if it and its directory belong to the running user and are
// writable by no one else, and neither is a symlink: a state file is acted
// on as root, so one that someone else could have written is refused.
func ReadState(dir string) (*State, error) {
	if err := checkPrivate(dir, true); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("refusing state_dir: %w", err)
	}
	path := filepath.Join(dir, StateFile)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("refusing state file: %s is a symlink", path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading state file: %w", err)
	}
	defer f.Close()
	if err := checkPrivateFile(f, path); err != nil {
		return nil, fmt.Errorf("refusing state file: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading state file: %w", err)
	}
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("refusing state file: %s is larger than %d bytes", path, maxStateSize)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding state file %s: %w", path, err)
	}
	return &s, nil
}

// maxStateSize bounds what ReadState reads.
const maxStateSize = 4 << 20

// RemoveState deletes the state file (absent is fine).
func RemoveState(dir string) error {
	err := os.Remove(filepath.Join(dir, StateFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing state file: %w", err)
	}
	return nil
}
