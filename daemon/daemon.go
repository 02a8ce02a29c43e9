// Package daemon runs the process around the engine: it runs the engine,
// starts the services beside it once its rules are in (the metrics endpoint,
// the status socket), turns SIGHUP and changes of the config file into
// reloads, and stops on SIGTERM or SIGINT — the services first, within a
// bound, then the engine, whose error Run returns. A second stop signal exits
// the process at once: the kernel drops nfclone's owned tables with it, and
// `nfclone flush` or the next start undoes the rest.
//
// The daemon knows the engine, the signals, the file watcher and the clock
// only through the fields of Daemon, so it is tested without root.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sync/errgroup"
)

// Engine is what the daemon runs (engine.Engine).
type Engine interface {
	// Run installs everything, runs until ctx ends, then removes
	// everything; ready, if the rules got in, is called once before.
	Run(ctx context.Context, ready func()) error
	// Reload asks the running engine to load its config again; it never
	// blocks.
	Reload()
}

// Service runs beside the engine (the metrics endpoint, the status socket)
// until its context ends. A service that fails is logged; the engine keeps
// running.
type Service struct {
	Name string
	Run  func(ctx context.Context) error
}

const (
	// DefaultDebounce is how long the config file must be quiet after a
	// change before it is reloaded: editors write in several steps.
	DefaultDebounce = 200 * time.Millisecond
	// DefaultStopTimeout bounds how long the services get to return once
	// they are told to stop; the engine is stopped after that either way.
	DefaultStopTimeout = 5 * time.Second
	// ExitSecondSignal is the exit code of a second SIGTERM or SIGINT.
	ExitSecondSignal = 130
)

// Daemon is one run of the engine in the foreground. The zero values of the
// optional fields are what the process wants; tests replace them.
type Daemon struct {
	Engine   Engine
	Log      *slog.Logger
	Services []Service
	// WatchPath, if set, is the config file: a write to it, or a file
	// renamed over it, reloads (after Debounce without further changes).
	WatchPath string
	// Signals are the signals the daemon acts on (SIGHUP, SIGTERM, SIGINT);
	// nil: the process's own.
	Signals <-chan os.Signal
	// Debounce defaults to DefaultDebounce; StopTimeout to DefaultStopTimeout.
	Debounce    time.Duration
	StopTimeout time.Duration
	// After is the clock of the debounce and of the stop bound; nil: time.After.
	After func(time.Duration) <-chan time.Time
	// Exit ends the process on a second stop signal; nil: os.Exit.
	Exit func(code int)
}

// Run runs the engine until it returns: after SIGTERM or SIGINT, after ctx
// ends, or on its own (an error at start, capture's limit). It returns the
// engine's error. Every goroutine it starts has returned when it returns,
// except a service that ignored its context for longer than StopTimeout
// (and the one waiting for it, which ends with it).
func (d *Daemon) Run(ctx context.Context) error {
	log := d.log()
	sigs := d.Signals
	if sigs == nil {
		ch := make(chan os.Signal, 2)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		defer signal.Stop(ch)
		sigs = ch
	}
	// The engine's and the services' contexts end only through the
	// stopper below, so the services always stop first, as they did when
	// the engine ran them.
	base := context.WithoutCancel(ctx)
	engCtx, stopEngine := context.WithCancel(base)
	defer stopEngine()
	svcs := newServices(base, d.Services, log)
	// ctl ends the signal handler, the watcher and the stopper once the
	// engine has returned.
	ctlCtx, stopCtl := context.WithCancel(base)
	defer stopCtl()
	stopReq := make(chan struct{})
	var once sync.Once
	requestStop := func() { once.Do(func() { close(stopReq) }) }

	var ctl errgroup.Group
	ctl.Go(func() error {
		d.handleSignals(ctlCtx, sigs, requestStop, log)
		return nil
	})
	if d.WatchPath != "" {
		ctl.Go(func() error {
			d.watch(ctlCtx, log)
			return nil
		})
	}
	ctl.Go(func() error {
		select {
		case <-stopReq:
		case <-ctx.Done():
		case <-ctlCtx.Done(): // the engine returned on its own
		}
		svcs.stop(d.stopTimeout(), d.after)
		stopEngine()
		return nil
	})
	err := d.Engine.Run(engCtx, svcs.start)
	stopCtl()
	_ = ctl.Wait() // the stopper's wait for the services is bounded
	return err
}

// handleSignals turns SIGHUP into a reload and the first SIGTERM or SIGINT
// into stop; a second one exits at once.
func (d *Daemon) handleSignals(ctx context.Context, sigs <-chan os.Signal, stop func(), log *slog.Logger) {
	stopping := false
	for {
		select {
		case <-ctx.Done():
			return
		case sig, ok := <-sigs:
			switch {
			case !ok:
				sigs = nil // no more signals; wait for the end
			case sig == syscall.SIGHUP:
				log.Info("SIGHUP: reloading")
				d.Engine.Reload()
			case !stopping:
				stopping = true
				log.Info("signal: stopping", "signal", sig.String())
				stop()
			default:
				log.Warn("second signal: exiting now; the kernel removes the tables, `nfclone flush` undoes the rest")
				d.exit(ExitSecondSignal)
			}
		}
	}
}

// watch reloads when the config file is written or replaced (editors rename
// a new file over the old one: the directory is watched), once the file has
// been quiet for the debounce. It ends with ctx; a watcher that cannot start
// is logged and the engine runs on without it.
func (d *Daemon) watch(ctx context.Context, log *slog.Logger) {
	abs, err := filepath.Abs(d.WatchPath)
	if err != nil {
		log.Error("watch: cannot watch the config file", "err", err)
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Error("watch: cannot watch the config file", "err", err)
		return
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(abs)); err != nil {
		log.Error("watch: cannot watch the config file", "err", fmt.Errorf("watching %s: %w", filepath.Dir(abs), err))
		return
	}
	var quiet <-chan time.Time // nil: no change pending
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Clean(ev.Name) == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				quiet = d.after(d.debounce())
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			log.Warn("watch", "err", err)
		case <-quiet:
			quiet = nil
			log.Info("config file changed: reloading", "path", abs)
			d.Engine.Reload()
		}
	}
}

func (d *Daemon) log() *slog.Logger {
	if d.Log == nil {
		return slog.Default()
	}
	return d.Log
}

func (d *Daemon) after(t time.Duration) <-chan time.Time {
	if d.After == nil {
		return time.After(t)
	}
	return d.After(t)
}

func (d *Daemon) exit(code int) {
	if d.Exit == nil {
		os.Exit(code)
	}
	d.Exit(code)
}

func (d *Daemon) debounce() time.Duration {
	if d.Debounce <= 0 {
		return DefaultDebounce
	}
	return d.Debounce
}

func (d *Daemon) stopTimeout() time.Duration {
	if d.StopTimeout <= 0 {
		return DefaultStopTimeout
	}
	return d.StopTimeout
}

// services are the daemon's services: started once (when the engine is
// ready, unless the daemon is already stopping), stopped once.
type services struct {
	list   []Service
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	stopped bool
	g       errgroup.Group
}

func newServices(parent context.Context, list []Service, log *slog.Logger) *services {
	ctx, cancel := context.WithCancel(parent)
	return &services{list: list, log: log, ctx: ctx, cancel: cancel}
}

// start runs the services; it is the engine's ready callback.
func (s *services) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	for _, svc := range s.list {
		s.g.Go(func() error {
			err := svc.Run(s.ctx)
			if err != nil {
				s.log.Error("service stopped", "service", svc.Name, "err", err)
			}
			return err
		})
	}
}

// stop ends the services' context and waits for them, at most timeout. A
// service still running then is left behind (logged): it must not keep the
// engine from removing its rules. stop reports whether all returned.
func (s *services) stop(timeout time.Duration, after func(time.Duration) <-chan time.Time) bool {
	s.mu.Lock()
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	s.cancel()
	if !started {
		return true
	}
	done := make(chan struct{})
	go func() { // ends when the last service does
		_ = s.g.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-after(timeout):
		s.log.Warn("services did not stop in time; stopping the engine without them", "timeout", timeout)
		return false
	}
}
