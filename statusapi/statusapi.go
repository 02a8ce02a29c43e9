// Package statusapi serves the running daemon's Status on a unix socket in
// its state directory, fetches it from there (`nfclone status`), and prints
// it as a table.
//
// The protocol is as small as it gets: the client connects to
// STATE_DIR/nfclone.sock, the daemon writes one JSON-encoded status.Status
// (followed by a newline) and closes the connection. The client sends
// nothing. Anyone who can connect can read the status, so the socket is
// mode 0600 (the daemon's user; root) in a directory created 0700.
package statusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nfclone/nfclone/status"
)

// SocketName is the socket's file name in the state directory.
const SocketName = "nfclone.sock"

// ErrNotRunning is wrapped by Fetch's error when no daemon answers.
var ErrNotRunning = errors.New("no running nfclone found")

// writeTimeout bounds how long one client may take to read the status.
const writeTimeout = 5 * time.Second

// fetchTimeout bounds Fetch when ctx has no deadline.
const fetchTimeout = 5 * time.Second

// maxStatus bounds what Fetch reads.
const maxStatus = 64 << 20

// SocketPath returns the status socket's path for stateDir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// Serve listens on SocketPath(stateDir) and answers every connection with
// one JSON Status from source, until ctx is done; then it closes the
// listener, waits for its goroutine and removes the socket (unless another
// process has replaced it meanwhile), and returns nil.
//
// stateDir is created (mode 0700) if missing. A stale socket left by a
// killed daemon is removed first; a socket that still answers belongs to
// another running daemon and is an error, as is any other file in its
// place. Setup errors are returned at once, before anything is served.
func Serve(ctx context.Context, stateDir string, source func() status.Status, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ln, id, err := listen(ctx, stateDir)
	if err != nil {
		return err
	}
	path := SocketPath(stateDir)
	log.Debug("status: serving", "socket", path)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				log.Warn("status: accept", "socket", path, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			answer(conn, source, log)
		}
	}()

	<-ctx.Done()
	ln.Close()
	wg.Wait()
	if fi, err := os.Lstat(path); err == nil && os.SameFile(fi, id) {
		if err := os.Remove(path); err != nil {
			log.Warn("status: remove socket", "socket", path, "err", err)
		}
	}
	return nil
}

// answer writes one Status to conn and closes it.
func answer(conn net.Conn, source func() status.Status, log *slog.Logger) {
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := json.NewEncoder(conn).Encode(source()); err != nil && !errors.Is(err, syscall.EPIPE) {
		log.Debug("status: write", "err", err)
	}
}

// listen prepares the directory, removes a stale socket and binds a new
// one with mode 0600. id identifies the socket file it made. The socket is
// bound under a temporary name, made 0600, then renamed into place: it is
// never visible at its path with other permissions.
func listen(ctx context.Context, stateDir string) (*net.UnixListener, fs.FileInfo, error) {
	if stateDir == "" {
		return nil, nil, errors.New("status: no state_dir")
	}
	path := SocketPath(stateDir)
	tmp := filepath.Join(stateDir, fmt.Sprintf(".%s.%d", SocketName, os.Getpid()))
	// sun_path holds 108 bytes with the terminating NUL.
	if len(tmp) > 107 {
		return nil, nil, fmt.Errorf("status: socket path %s is too long (the limit is about %d bytes): choose a shorter state_dir",
			path, 107-(len(tmp)-len(path)))
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("status: state_dir: %w", err)
	}
	if err := removeStale(ctx, path); err != nil {
		return nil, nil, err
	}
	os.Remove(tmp) // left by a killed daemon with our pid
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", tmp)
	if err != nil {
		return nil, nil, fmt.Errorf("status: listen on %s: %w", path, err)
	}
	ln := l.(*net.UnixListener)
	// Serve removes the socket itself, and only if it is still its own.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, fs.FileInfo, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(fmt.Errorf("status: chmod %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("status: %w", err))
	}
	id, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("status: %w", err)
	}
	return ln, id, nil
}

// removeStale removes a socket nobody answers on; a live one is an error.
func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("status: %s exists and is not a socket: remove it or choose another state_dir", path)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	if c, err := d.DialContext(dctx, "unix", path); err == nil {
		c.Close()
		return fmt.Errorf("status: %s answers: another nfclone is running with this state_dir", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("status: remove stale socket: %w", err)
	}
	return nil
}

// Fetch reads the Status of the daemon whose state directory is stateDir.
// When no daemon answers, the error wraps ErrNotRunning and says where it
// looked.
func Fetch(ctx context.Context, stateDir string) (status.Status, error) {
	path := SocketPath(stateDir)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fetchTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOTDIR):
			return status.Status{}, fmt.Errorf("%w in %s (socket %s): is it running? is state_dir the same?",
				ErrNotRunning, stateDir, path)
		case errors.Is(err, fs.ErrPermission):
			return status.Status{}, fmt.Errorf("status: no access to %s (mode 0600): run as root or as the daemon's user", path)
		}
		return status.Status{}, fmt.Errorf("status: connect to %s: %w", path, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var s status.Status
	dec := json.NewDecoder(io.LimitReader(conn, maxStatus))
	if err := dec.Decode(&s); err != nil {
		// The socket's deadline is ctx's: report it as ctx's error, also
		// when it fires a moment before ctx's own timer.
		if cerr := ctx.Err(); cerr != nil {
			err = cerr
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = context.DeadlineExceeded
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return status.Status{}, fmt.Errorf("status: the daemon did not answer on %s in time: %w", path, err)
		}
		return status.Status{}, fmt.Errorf("status: read from %s: %w", path, err)
	}
	return s, nil
}
