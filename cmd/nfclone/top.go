package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nfclone/nfclone/engine"
	"github.com/nfclone/nfclone/status"
	"github.com/nfclone/nfclone/statusapi"
)

// topCommand is `nfclone top`: a live view of the running daemon over its
// status socket, refreshed every second like top(1).
func topCommand(g *globals) *cobra.Command {
	var stateDir string
	var interval time.Duration
	var once bool
	var iterations int
	cmd := &cobra.Command{
		Use:   "top [-c FILE] [--once]",
		Short: "Live view of the running daemon: copies/s, drops/s by reason, queue depth, targets (q quits)",
		Long: `Shows the running daemon's sessions (copies/s, bit/s, seen/s, drops/s, copy queue
depth), the drops per second by reason, its targets (sent/s, errors/s, last error) and
the interfaces sessions wait for, from the status socket in state_dir, refreshed every
--interval. On a terminal it redraws the screen (q or Ctrl-C quits); otherwise it
prints one plain-text frame per interval (like top -b). --once prints one frame, with
rates over one interval, and exits.`,
		Example: `  nfclone top
  nfclone top --once | grep -A5 ^SESSION
  nfclone top --state-dir /run/nfclone -n 10 > top.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %s: at least 100ms", interval)}
			}
			c, err := g.loadOrDefaults()
			if err != nil {
				return err
			}
			if stateDir != "" {
				c.StateDir = stateDir
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			t := &top{stateDir: c.StateDir, interval: interval, out: g.stdout}
			if once {
				return t.once(ctx)
			}
			if isTerminal(g.stdout) {
				return t.screen(ctx, os.Stdin, iterations)
			}
			return t.plain(ctx, iterations)
		},
	}
	cmd.Flags().StringVarP(&g.configPath, "config", "c", "", "config file (YAML): its state_dir")
	cmd.Flags().StringVar(&stateDir, "state-dir", "", "state directory (overrides the config's state_dir)")
	cmd.Flags().DurationVarP(&interval, "interval", "d", time.Second, "refresh interval")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame (rates over one interval) and exit")
	cmd.Flags().IntVarP(&iterations, "iterations", "n", 0, "exit after this many frames (0: until q or Ctrl-C)")
	return cmd
}

type top struct {
	stateDir string
	interval time.Duration
	out      io.Writer
	prev     *status.Status
	prevAt   time.Time
}

// frame fetches the status and renders it against the previous one.
func (t *top) frame(ctx context.Context, w io.Writer, width int, hint string) error {
	s, err := statusapi.Fetch(ctx, t.stateDir)
	now := time.Now()
	f := statusapi.TopFrame{Prev: t.prev, PrevAt: t.prevAt, Cur: s, CurAt: now, Err: err, Width: width, Hint: hint}
	if rerr := statusapi.WriteTop(w, f); rerr != nil {
		return rerr
	}
	if err == nil {
		t.prev, t.prevAt = &s, now
	}
	return err
}

// sleep waits until d has passed or ctx is done (false).
func sleep(ctx context.Context, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

func (t *top) once(ctx context.Context) error {
	if err := t.frame(ctx, io.Discard, 0, ""); err != nil {
		return fmt.Errorf("%w: %v", engine.ErrHost, err)
	}
	if !sleep(ctx, t.interval) {
		return nil
	}
	if err := t.frame(ctx, t.out, 0, ""); err != nil {
		return fmt.Errorf("%w: %v", engine.ErrHost, err)
	}
	return nil
}

// plain prints a frame per interval, separated by a blank line; a daemon
// that does not answer at the start is an error, later it is shown.
func (t *top) plain(ctx context.Context, iterations int) error {
	for n := 1; ; n++ {
		start := time.Now()
		var buf bytes.Buffer
		err := t.frame(ctx, &buf, 0, "")
		if err != nil && t.prev == nil {
			return fmt.Errorf("%w: %v", engine.ErrHost, err)
		}
		buf.WriteString("\n")
		if _, werr := t.out.Write(buf.Bytes()); werr != nil {
			return werr
		}
		if iterations > 0 && n >= iterations {
			return nil
		}
		if !sleep(ctx, t.interval-time.Since(start)) {
			return nil
		}
	}
}

// screen redraws the terminal every interval on the alternate screen
// until q, Ctrl-C or the iterations; the terminal is restored on exit.
func (t *top) screen(ctx context.Context, in *os.File, iterations int) error {
	outFd := -1
	if f, ok := t.out.(*os.File); ok {
		outFd = int(f.Fd())
	}
	inFd := int(in.Fd())
	hint := "(every " + t.interval.String() + "; q quits)"
	if old, err := unix.IoctlGetTermios(inFd, unix.TCGETS); err == nil {
		raw := *old
		raw.Lflag &^= unix.ICANON | unix.ECHO
		raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
		if err := unix.IoctlSetTermios(inFd, unix.TCSETS, &raw); err == nil {
			defer unix.IoctlSetTermios(inFd, unix.TCSETS, old)
		}
	} else {
		inFd = -1 // no keys to read
		hint = "(every " + t.interval.String() + "; Ctrl-C quits)"
	}
	io.WriteString(t.out, "\x1b[?1049h\x1b[?25l")
	defer io.WriteString(t.out, "\x1b[?25h\x1b[?1049l")

	for n := 1; ; n++ {
		start := time.Now()
		width, height := 0, 0
		if outFd >= 0 {
			if ws, err := unix.IoctlGetWinsize(outFd, unix.TIOCGWINSZ); err == nil {
				width, height = int(ws.Col), int(ws.Row)
			}
		}
		var buf bytes.Buffer
		err := t.frame(ctx, &buf, width, hint)
		if err != nil && t.prev == nil {
			return fmt.Errorf("%w: %v", engine.ErrHost, err)
		}
		text := strings.TrimRight(buf.String(), "\n")
		if lines := strings.Split(text, "\n"); height > 0 && len(lines) > height-1 {
			text = strings.Join(lines[:height-1], "\n")
		}
		if _, werr := io.WriteString(t.out, "\x1b[H\x1b[2J"+text+"\n"); werr != nil {
			return werr
		}
		if iterations > 0 && n >= iterations {
			return nil
		}
		quit, err := waitKey(ctx, inFd, start.Add(t.interval))
		if err != nil {
			return err
		}
		if quit {
			return nil
		}
	}
}

// waitKey waits until deadline for q (true) on fd, or for ctx to end
// (true). fd < 0: just waits.
func waitKey(ctx context.Context, fd int, deadline time.Time) (bool, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		if ctx.Err() != nil {
			return true, nil
		}
		step := min(left, 100*time.Millisecond)
		if fd < 0 {
			if !sleep(ctx, step) {
				return true, nil
			}
			continue
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(step.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("top: poll: %w", err)
		}
		if n == 0 {
			continue
		}
		var b [16]byte
		m, err := unix.Read(fd, b[:])
		if err != nil && !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return false, fmt.Errorf("top: read: %w", err)
		}
		if m == 0 && err == nil {
			return true, nil // end of input
		}
		if bytes.ContainsAny(b[:max(m, 0)], "qQ") {
			return true, nil
		}
	}
}
