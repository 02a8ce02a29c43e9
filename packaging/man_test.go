package packaging

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// commandsOf lists the subcommands `nfclone help` shows.
func commandsOf(t *testing.T, bin string, args ...string) []string {
	t.Helper()
	out, err := exec.Command(bin, append(args, "--help")...).Output()
	if err != nil {
		t.Fatalf("%s %v --help: %v", bin, args, err)
	}
	var cmds []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "Available Commands:"):
			in = true
		case in && strings.TrimSpace(l) == "":
			in = false
		case in:
			if f := strings.Fields(l); len(f) > 0 && f[0] != "help" {
				cmds = append(cmds, f[0])
			}
		}
	}
	return cmds
}

// TestManPages: `nfclone man DIR` writes one page per command, and each
// renders with man -l without a warning.
func TestManPages(t *testing.T) {
	manBin := mustHaveTool(t, "man", "the Debian package man-db")
	bin := buildNfclone(t)
	dir := t.TempDir()
	if out, err := exec.Command(bin, "man", dir).CombinedOutput(); err != nil {
		t.Fatalf("nfclone man: %v\n%s", err, out)
	}
	want := []string{"nfclone.8"}
	for _, c := range commandsOf(t, bin) {
		want = append(want, "nfclone-"+c+".8")
		for _, sub := range commandsOf(t, bin, c) {
			want = append(want, "nfclone-"+c+"-"+sub+".8")
		}
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "*.8"))
	if len(pages) != len(want) {
		t.Errorf("%d pages, want %d (%v)", len(pages), len(want), want)
	}
	for _, w := range want {
		p := filepath.Join(dir, w)
		cmd := exec.Command(manBin, "--warnings", "-l", p)
		cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat", "MAN_KEEP_FORMATTING=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("man -l %s: %v\n%s", w, err, stderr.String())
			continue
		}
		if stderr.Len() > 0 {
			t.Errorf("man -l %s warns:\n%s", w, stderr.String())
		}
		text := stdout.String()
		name := strings.TrimSuffix(w, ".8")
		for _, s := range []string{"NAME", "SYNOPSIS", name} {
			if !strings.Contains(text, s) {
				t.Errorf("%s: rendered page lacks %q:\n%s", w, s, text)
			}
		}
	}
	t.Logf("%d man pages rendered", len(want))
}
