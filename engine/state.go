package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nfclone/nfclone/route"
)

// StateFile is the name of the state file inside state_dir.
const StateFile = "state.json"

// State is what a running nfclone changed, written before and after every
// change so that a killed run can be undone (`nfclone flush`, or the next
// start).
type State struct {
	PID     int           `json:"pid"`
	Started time.Time     `json:"started"`
	Table   string        `json:"table"`
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

// ReadState reads the state file; (nil, nil) when there is none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state file: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding state file %s: %w", filepath.Join(dir, StateFile), err)
	}
	return &s, nil
}

// RemoveState deletes the state file (absent is fine).
func RemoveState(dir string) error {
	err := os.Remove(filepath.Join(dir, StateFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing state file: %w", err)
	}
	return nil
}

// Alive reports whether the state's process is a running nfclone other than
// this one.
func (s *State) Alive() bool {
	if s == nil || s.PID <= 0 || s.PID == os.Getpid() {
		return false
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(s.PID) + "/comm")
	if err != nil {
		return false
	}
	return strings.HasPrefix(strings.TrimSpace(string(comm)), "nfclone")
}
