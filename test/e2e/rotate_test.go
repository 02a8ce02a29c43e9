package e2e

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/nfclone/nfclone/test/lab"
)

// rotate_every: 10s with a strftime path gives files whose packets each
// fall in one 10-second window, a distinct one per file, named after its
// start, and together they hold every copy (tshark reads each file).
func TestPcapRotateEvery(t *testing.T) {
	lab.RequireTools(t, "tshark")
	l := lab.New(t)
	dir := t.TempDir()
	d := startNfclone(t, l, fmt.Sprintf(`
sessions:
  - name: rot
    method: log
    sources: [{interface: e0, direction: ingress}]
    rules: [{number: 1, action: accept, protocol: icmp}]
    targets: [{kind: pcap, path: "%s/rot-%%H%%M%%S.pcap", rotate_every: 10s}]
`, dir))
	// Pings for 21 s: at least three windows.
	const n = 105
	sent, recv, _, err := lab.Ping(context.Background(), l, l.Src, lab.EngE0IP, n, 200*time.Millisecond)
	if err != nil || sent != n || recv != n {
		t.Fatalf("ping: sent %d received %d: %v", sent, recv, err)
	}
	total := func() int {
		files, _ := filepath.Glob(filepath.Join(dir, "rot-*.pcap"))
		sum := 0
		for _, f := range files {
			sum += len(tsharkRows(t, f, "icmp.type == 8", "frame.number"))
		}
		return sum
	}
	lab.WaitFor(t, 5*time.Second, func() bool { return total() == n }, fmt.Sprintf("%d copies in the rotated files", n))
	d.stop(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	sort.Strings(files)
	if len(files) < 3 {
		t.Fatalf("%d files after 21 s with rotate_every 10s, want at least 3: %v", len(files), files)
	}
	windows := map[int64]string{}
	for _, f := range files {
		rows := tsharkRows(t, f, "", "frame.time_epoch")
		if len(rows) == 0 {
			t.Fatalf("%s holds no packet", f)
		}
		var w int64 = -1
		for _, r := range rows {
			ts, err := strconv.ParseFloat(r[0], 64)
			if err != nil {
				t.Fatal(err)
			}
			win := int64(math.Floor(ts / 10))
			if w >= 0 && win != w {
				t.Fatalf("%s holds packets of two 10-second windows", f)
			}
			w = win
		}
		if other, dup := windows[w]; dup {
			t.Fatalf("%s and %s both hold the window starting %v", other, f, time.Unix(w*10, 0))
		}
		windows[w] = f
		if want := "rot-" + time.Unix(w*10, 0).Format("150405") + ".pcap"; filepath.Base(f) != want {
			t.Fatalf("file %s holds the window starting %v; want it named %s", f, time.Unix(w*10, 0), want)
		}
	}
	t.Logf("%d files, %d copies", len(files), n)
	if _, err := os.Stat(dir); err != nil {
		t.Fatal(err)
	}
}
