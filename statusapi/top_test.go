package statusapi

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfclone/nfclone/status"
)

// later is fakeStatus two seconds on: ids copied 200 more (40 bytes
// each... ~98 B), dropped 10 more queue_overflow and 2 send_error; its
// gateway target sent 190 more with 2 errors; the dup session copied 14.
func later() status.Status {
	s := fakeStatus()
	ids := &s.Sessions[0]
	ids.Seen.Packets += 220
	ids.Copied.Packets += 200
	ids.Copied.Bytes += 200 * 98
	l := *ids.Ledger
	l.Drops.QueueOverflow += 10
	l.Drops.SendError += 2
	ids.Ledger = &l
	ids.Queue = &status.QueueStatus{Depth: 4000, Cap: 8192, Workers: 2}
	gw := *ids.Targets[0].Stats
	gw.Sent += 190
	gw.Errors += 2
	ids.Targets[0].Stats = &gw
	s.Sessions[2].Copied.Packets += 14
	s.Sessions[2].Seen.Packets += 14
	return s
}

func TestWriteTopGolden(t *testing.T) {
	t0 := started.Add(26*time.Hour + 3*time.Minute + 4*time.Second)
	prev := fakeStatus()
	cases := map[string]TopFrame{
		"top.golden":        {Prev: &prev, PrevAt: t0, Cur: later(), CurAt: t0.Add(2 * time.Second), Hint: "(every 1s; q quits)"},
		"top-first.golden":  {Cur: fakeStatus(), CurAt: t0},
		"top-error.golden":  {Cur: status.Status{}, CurAt: t0, Err: errors.New("no running nfclone found in /run/nfclone")},
		"top-narrow.golden": {Prev: &prev, PrevAt: t0, Cur: later(), CurAt: t0.Add(2 * time.Second), Width: 60},
	}
	for name, f := range cases {
		var buf bytes.Buffer
		if err := WriteTop(&buf, f); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join("testdata", name)
		if *update {
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./statusapi -run Top -update)", err)
		}
		if got := buf.String(); got != string(want) {
			t.Errorf("%s differs (go test ./statusapi -run Top -update):\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
		}
	}
}

// The rates are the counters' increase over the interval.
func TestWriteTopRates(t *testing.T) {
	t0 := started.Add(time.Hour)
	prev := fakeStatus()
	var buf bytes.Buffer
	if err := WriteTop(&buf, TopFrame{Prev: &prev, PrevAt: t0, Cur: later(), CurAt: t0.Add(2 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	row := func(prefix string) []string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, prefix) {
				return strings.Fields(l)
			}
		}
		t.Fatalf("no row %q in:\n%s", prefix, out)
		return nil
	}
	ids := row("ids ")
	// SESSION METHOD STATE COPIES/S BIT/S SEEN/S DROPS/S QUEUE COPIED DROPPED
	if want := []string{"ids", "queue/hold", "running", "100", "78.4k", "110", "6", "4000/8192", "1150", "67"}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("ids row %v, want %v", ids, want)
	}
	if !strings.Contains(out, "ids: queue_overflow 5/s (total 40), send_error 1/s (total 13)") {
		t.Errorf("drops by reason:\n%s", out)
	}
	gw := row("gateway 10.77.2.2")
	if gw[6] != "95" || gw[7] != "1" {
		t.Errorf("gateway target row %v: want 95 sent/s, 1 error/s", gw)
	}
	if tap := row("tap "); tap[5] != "7" {
		t.Errorf("tap row %v: want 7 copies/s", tap)
	}
	if !strings.Contains(out, "interfaces missing: e9 (tap waiting)") {
		t.Errorf("interfaces waiting:\n%s", out)
	}

	// A restarted daemon (other pid): no rates, no negative numbers.
	restarted := fakeStatus()
	restarted.PID = 1
	buf.Reset()
	if err := WriteTop(&buf, TopFrame{Prev: &restarted, PrevAt: t0, Cur: later(), CurAt: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(strings.Split(buf.String(), "\n")[4]); f[0] != "ids" || f[3] != "-" {
		t.Errorf("after a restart: %v", f)
	}
}

func TestPerSecond(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.001: "<0.01", 0.5: "0.5", 1: "1", 7.25: "7.25", 12.5: "12.5",
		950: "950", 999.4: "999", 1250: "1.25k", 48200000: "48.2M", 3e9: "3G"} {
		if got := perSecond(v); got != want {
			t.Errorf("perSecond(%v) = %q, want %q", v, got, want)
		}
	}
}
