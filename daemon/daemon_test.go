package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// wait bounds every wait of these tests: they fail instead of hanging.
const wait = 5 * time.Second

// journal records what happened, in order, across goroutines.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(ev string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, ev)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

func (j *journal) count(ev string) int {
	n := 0
	for _, e := range j.list() {
		if e == ev {
			n++
		}
	}
	return n
}

// fakeEngine is an engine that installs nothing: it calls ready (unless
// startErr), counts reloads and returns stopErr when its context ends.
type fakeEngine struct {
	j        *journal
	startErr error
	stopErr  error
}

func (f *fakeEngine) Run(ctx context.Context, ready func()) error {
	f.j.add("engine started")
	if f.startErr != nil {
		return f.startErr
	}
	ready()
	f.j.add("engine ready")
	<-ctx.Done()
	f.j.add("engine stopped")
	return f.stopErr
}

func (f *fakeEngine) Reload() { f.j.add("reload") }

// fakeClock hands out timers the test fires.
type fakeClock struct {
	mu     sync.Mutex
	timers []chan time.Time
	asked  []time.Duration
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.timers = append(c.timers, ch)
	c.asked = append(c.asked, d)
	return ch
}

func (c *fakeClock) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *fakeClock) durations() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.asked)
}

func (c *fakeClock) fire(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case c.timers[i] <- time.Time{}:
	default: // fired already
	}
}

// syncBuffer is a log destination read while the daemon writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLog() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// service records its start and its end, and ends with its context.
func service(j *journal, name string) Service {
	return Service{Name: name, Run: func(ctx context.Context) error {
		j.add(name + " started")
		<-ctx.Done()
		j.add(name + " stopped")
		return nil
	}}
}

// start runs d in the background; the channel gets Run's error.
func start(d *Daemon) <-chan error {
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	return done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(wait):
		t.Fatal("Run did not return")
		return nil
	}
}

func TestSIGHUPReloads(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 1)
	log, logs := newLog()
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: log, Signals: sigs}
	done := start(d)
	waitFor(t, "the engine", func() bool { return j.count("engine ready") == 1 })
	sigs <- syscall.SIGHUP
	waitFor(t, "a reload", func() bool { return j.count("reload") == 1 })
	sigs <- syscall.SIGHUP
	waitFor(t, "a second reload", func() bool { return j.count("reload") == 2 })
	if j.count("engine stopped") != 0 {
		t.Fatal("SIGHUP stopped the engine")
	}
	sigs <- syscall.SIGTERM
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(logs.String(), "SIGHUP: reloading") {
		t.Fatalf("no reload log line:\n%s", logs)
	}
}

// SIGTERM stops the services, then the engine, and Run returns the
// engine's error (the teardown's).
func TestSIGTERMStopsInOrder(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			j := &journal{}
			sigs := make(chan os.Signal, 1)
			teardown := errors.New("teardown failed")
			d := &Daemon{Engine: &fakeEngine{j: j, stopErr: teardown}, Signals: sigs,
				Services: []Service{service(j, "metrics"), service(j, "status")}}
			done := start(d)
			waitFor(t, "the services", func() bool { return j.count("metrics started")+j.count("status started") == 2 })
			sigs <- sig
			if err := result(t, done); !errors.Is(err, teardown) {
				t.Fatalf("Run = %v, want the engine's %v", err, teardown)
			}
			ev := j.list()
			last := slices.Index(ev, "engine stopped")
			for _, s := range []string{"metrics stopped", "status stopped"} {
				if i := slices.Index(ev, s); i < 0 || i > last {
					t.Fatalf("%q not before the engine stopped: %q", s, ev)
				}
			}
		})
	}
}

// The services start only once the engine is ready (the state directory is
// the engine's, and the status socket lives in it).
func TestServicesStartWhenReady(t *testing.T) {
	j := &journal{}
	d := &Daemon{Engine: &fakeEngine{j: j}, Signals: make(chan os.Signal),
		Services: []Service{service(j, "status")}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the service", func() bool { return j.count("status started") == 1 })
	cancel() // the parent context stops it like a signal
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ev := j.list()
	if slices.Index(ev, "engine started") > slices.Index(ev, "status started") ||
		slices.Index(ev, "status stopped") > slices.Index(ev, "engine stopped") {
		t.Fatalf("order: %q", ev)
	}
}

// An engine that fails at start returns at once, with the watcher running
// and nobody sending a signal; the services never start.
func TestStartErrorReturns(t *testing.T) {
	j := &journal{}
	cfg := filepath.Join(t.TempDir(), "nfclone.yaml")
	if err := os.WriteFile(cfg, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("sessions[0]: no such interface")
	d := &Daemon{Engine: &fakeEngine{j: j, startErr: bad}, Signals: make(chan os.Signal),
		WatchPath: cfg, Services: []Service{service(j, "status")}}
	if err := result(t, start(d)); !errors.Is(err, bad) {
		t.Fatalf("Run = %v, want %v", err, bad)
	}
	if n := j.count("status started"); n != 0 {
		t.Fatalf("a service started for an engine that never was ready: %q", j.list())
	}
}

// A change of the watched file reloads once the file has been quiet for
// the debounce: several writes, one reload. Other files in the directory
// do not count.
func TestFileChangeReloadsDebounced(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nfclone.yaml")
	if err := os.WriteFile(cfg, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := &journal{}
	clock := &fakeClock{}
	sigs := make(chan os.Signal, 1)
	log, logs := newLog()
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: log, Signals: sigs, WatchPath: cfg, After: clock.After}
	done := start(d)
	waitFor(t, "the engine", func() bool { return j.count("engine ready") == 1 })
	// The watcher may not be watching yet: write until it has seen one.
	waitFor(t, "the watcher to see a write", func() bool {
		if err := os.WriteFile(cfg, []byte("b"), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		return clock.n() > 0
	})
	if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// An editor's way: a new file renamed over the old one.
	tmp := filepath.Join(dir, ".nfclone.yaml.swp")
	if err := os.WriteFile(tmp, []byte("c"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := clock.n()
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rename to restart the debounce", func() bool { return clock.n() > n })
	time.Sleep(50 * time.Millisecond) // events still in flight restart it too
	if got := j.count("reload"); got != 0 {
		t.Fatalf("%d reloads before the file was quiet", got)
	}
	for i := 0; i < clock.n()-1; i++ {
		clock.fire(i) // superseded timers: nothing
	}
	time.Sleep(50 * time.Millisecond)
	if got := j.count("reload"); got != 0 {
		t.Fatalf("a superseded debounce timer reloaded (%d)", got)
	}
	// The latest timer is the armed one (an event that came late armed a
	// newer one: fire that).
	waitFor(t, "the reload", func() bool {
		clock.fire(clock.n() - 1)
		time.Sleep(10 * time.Millisecond)
		return j.count("reload") == 1
	})
	for _, d := range clock.durations() {
		if d != DefaultDebounce {
			t.Fatalf("debounce %v, want %v", d, DefaultDebounce)
		}
	}
	sigs <- syscall.SIGTERM
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := j.count("reload"); got != 1 {
		t.Fatalf("%d reloads, want 1", got)
	}
	if !strings.Contains(logs.String(), "config file changed: reloading") {
		t.Fatalf("no reload log line:\n%s", logs)
	}
}

// A service that fails is logged; the engine and the other services run
// on, and stop cleanly.
func TestServiceFails(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 1)
	log, logs := newLog()
	failing := Service{Name: "metrics", Run: func(context.Context) error {
		return errors.New("metrics: listen on :9108: address already in use")
	}}
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: log, Signals: sigs,
		Services: []Service{failing, service(j, "status")}}
	done := start(d)
	waitFor(t, "the failure to be logged", func() bool { return strings.Contains(logs.String(), "address already in use") })
	if !strings.Contains(logs.String(), `msg="service stopped" service=metrics`) {
		t.Fatalf("log:\n%s", logs)
	}
	time.Sleep(20 * time.Millisecond)
	if j.count("engine stopped")+j.count("status stopped") != 0 {
		t.Fatalf("a failed service stopped the others: %q", j.list())
	}
	sigs <- syscall.SIGTERM
	if err := result(t, done); err != nil {
		t.Fatalf("Run = %v; a service's failure is not the engine's", err)
	}
	if j.count("status stopped") != 1 {
		t.Fatalf("the other service was not stopped: %q", j.list())
	}
}

// A service that ignores its context does not keep the engine from
// stopping: after StopTimeout the engine is stopped without it.
func TestStopBoundedWhenServiceHangs(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 1)
	clock := &fakeClock{}
	log, logs := newLog()
	release := make(chan struct{})
	hung := make(chan struct{})
	stuck := Service{Name: "stuck", Run: func(context.Context) error {
		defer close(hung)
		<-release // deaf to its context
		return nil
	}}
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: log, Signals: sigs, After: clock.After,
		StopTimeout: 3 * time.Second, Services: []Service{stuck, service(j, "status")}}
	done := start(d)
	waitFor(t, "the services", func() bool { return j.count("status started") == 1 })
	sigs <- syscall.SIGTERM
	waitFor(t, "the stop bound to be armed", func() bool { return clock.n() == 1 })
	if got := clock.durations()[0]; got != 3*time.Second {
		t.Fatalf("stop bound %v, want 3s", got)
	}
	time.Sleep(20 * time.Millisecond)
	if j.count("engine stopped") != 0 {
		t.Fatal("the engine stopped before the services' bound")
	}
	clock.fire(0)
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if j.count("engine stopped") != 1 || j.count("status stopped") != 1 {
		t.Fatalf("events: %q", j.list())
	}
	if !strings.Contains(logs.String(), "services did not stop in time") {
		t.Fatalf("log:\n%s", logs)
	}
	close(release) // the test's own goroutine: let it end
	<-hung
}

// With the real clock too: a stop is bounded by StopTimeout.
func TestStopBoundedRealClock(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 1)
	release := make(chan struct{})
	defer close(release)
	stuck := Service{Name: "stuck", Run: func(context.Context) error { <-release; return nil }}
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: slog.New(slog.DiscardHandler), Signals: sigs,
		StopTimeout: 100 * time.Millisecond, Services: []Service{stuck}}
	done := start(d)
	waitFor(t, "the engine", func() bool { return j.count("engine ready") == 1 })
	t0 := time.Now()
	sigs <- syscall.SIGTERM
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if took := time.Since(t0); took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("stop took %v with a 100ms bound", took)
	}
}

// A second stop signal while stopping exits at once with 130.
func TestSecondSignalExits(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 2)
	exited := make(chan int, 1)
	release := make(chan struct{})
	defer close(release)
	stuck := Service{Name: "stuck", Run: func(context.Context) error { <-release; return nil }}
	log, logs := newLog()
	d := &Daemon{Engine: &fakeEngine{j: j}, Log: log, Signals: sigs, Exit: func(c int) { exited <- c },
		Services: []Service{stuck}, StopTimeout: time.Hour}
	done := start(d)
	waitFor(t, "the engine", func() bool { return j.count("engine ready") == 1 })
	sigs <- syscall.SIGINT
	sigs <- syscall.SIGTERM
	select {
	case code := <-exited:
		if code != ExitSecondSignal {
			t.Fatalf("exit %d, want %d", code, ExitSecondSignal)
		}
	case <-time.After(wait):
		t.Fatal("no exit after the second signal")
	}
	if !strings.Contains(logs.String(), "second signal: exiting now") {
		t.Fatalf("log:\n%s", logs)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) before the stuck service's bound", err)
	default:
	}
}

// The stop signal arrives before the engine is ready (it was still
// installing): the services never start, the engine is stopped.
func TestStopBeforeReady(t *testing.T) {
	j := &journal{}
	sigs := make(chan os.Signal, 1)
	eng := engineFunc(func(ctx context.Context, ready func()) error {
		<-ctx.Done() // still installing when the stop came
		ready()      // as the engine does: ready once the rules are in, ctx or not
		return nil
	})
	d := &Daemon{Engine: eng, Signals: sigs, Services: []Service{service(j, "status")}}
	done := start(d)
	sigs <- syscall.SIGTERM
	if err := result(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if j.count("status started") != 0 {
		t.Fatalf("a service started after the stop: %q", j.list())
	}
}

// An engine that returns on its own (capture's limit) stops the services.
func TestEngineEndsOnItsOwn(t *testing.T) {
	j := &journal{}
	eng := engineFunc(func(ctx context.Context, ready func()) error {
		ready()
		for j.count("status started") == 0 {
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	d := &Daemon{Engine: eng, Signals: make(chan os.Signal), Services: []Service{service(j, "status")}}
	if err := result(t, start(d)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if j.count("status stopped") != 1 {
		t.Fatalf("the service was not stopped: %q", j.list())
	}
}

type engineFunc func(ctx context.Context, ready func()) error

func (f engineFunc) Run(ctx context.Context, ready func()) error { return f(ctx, ready) }
func (f engineFunc) Reload()                                     {}
