package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mustBeRoot skips (fails when NFCLONE_E2E=1) unless the test runs as root.
func mustBeRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NFCLONE_E2E") == "1" {
		t.Fatalf("not root (NFCLONE_E2E=1): %s", why)
	}
	t.Skipf("not root: %s", why)
}

// debFiles are the package's files that matter to an operator.
var debFiles = []string{
	"/usr/bin/nfclone",
	"/lib/systemd/system/nfclone.service",
	"/usr/lib/sysusers.d/nfclone.conf",
	"/usr/share/doc/nfclone/examples/nfclone.yaml",
	"/usr/share/doc/nfclone/copyright",
	"/usr/share/nfclone/nfclone.schema.json",
	"/usr/share/man/man8/nfclone.8.gz",
	"/usr/share/man/man8/nfclone-run.8.gz",
	"/usr/share/man/man8/nfclone-tap.8.gz",
	"/usr/share/bash-completion/completions/nfclone",
	"/usr/share/zsh/vendor-completions/_nfclone",
}

// TestDebianPackage builds the package (scripts/deb.sh, as `make deb`),
// runs lintian on it when lintian is installed, installs it with dpkg -i,
// checks the files, the user and that nothing was enabled or started,
// then removes (dpkg -r) and purges it and checks that the files are gone.
func TestDebianPackage(t *testing.T) {
	mustBeRoot(t, "dpkg -i")
	if os.Getenv("NFCLONE_E2E") != "1" {
		t.Skip("installs and removes a package on this host: runs with NFCLONE_E2E=1 (as in CI)")
	}
	dpkg := mustHaveTool(t, "dpkg", "dpkg")
	mustHaveTool(t, "dpkg-deb", "dpkg")
	if out, err := exec.Command("dpkg-query", "-W", "nfclone").CombinedOutput(); err == nil {
		t.Skipf("a package nfclone is already installed here (%s): not touching it", strings.TrimSpace(string(out)))
	}
	_, userErr := exec.Command("getent", "passwd", "nfclone").Output()
	userBefore := userErr == nil

	out := t.TempDir()
	build := exec.Command("bash", "scripts/deb.sh", out)
	build.Dir = ".."
	var stderr bytes.Buffer
	build.Stderr = &stderr
	b, err := build.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(b))
	if !strings.HasPrefix(filepath.Base(deb), "nfclone_") || !strings.HasSuffix(deb, "_amd64.deb") {
		t.Fatalf("package %q is not nfclone_<version>_amd64.deb", deb)
	}
	info, err := exec.Command("dpkg-deb", "--field", deb, "Package", "Version", "Architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s", filepath.Base(deb), strings.ReplaceAll(strings.TrimSpace(string(info)), "\n", ", "))

	if lintian, err := exec.LookPath("lintian"); err == nil {
		l, err := exec.Command(lintian, "--tag-display-limit", "0", deb).CombinedOutput()
		var tags []string
		for _, line := range strings.Split(string(l), "\n") {
			if len(line) > 2 && line[1] == ':' && strings.Contains("EWI", line[:1]) {
				tags = append(tags, line)
			}
		}
		if err != nil || len(tags) > 0 {
			t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
		} else {
			t.Log("lintian: clean")
		}
	} else {
		t.Log("lintian not installed: not run")
	}

	t.Cleanup(func() {
		if o, err := exec.Command(dpkg, "--purge", "nfclone").CombinedOutput(); err != nil {
			t.Logf("cleanup: dpkg --purge nfclone: %v\n%s", err, o)
		}
		if !userBefore {
			_ = exec.Command("userdel", "nfclone").Run()
			_ = exec.Command("groupdel", "nfclone").Run()
		}
	})
	if o, err := exec.Command(dpkg, "-i", deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, o)
	}
	for _, f := range debFiles {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	if o, err := exec.Command("/usr/bin/nfclone", "version").Output(); err != nil || !strings.HasPrefix(string(o), "nfclone ") {
		t.Errorf("/usr/bin/nfclone version: %v %q", err, o)
	}
	unit, _ := os.ReadFile("/lib/systemd/system/nfclone.service")
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/nfclone run -c /etc/nfclone/nfclone.yaml")) {
		t.Errorf("installed unit does not run /usr/bin/nfclone:\n%s", unit)
	}
	ex, _ := os.ReadFile("/usr/share/doc/nfclone/examples/nfclone.yaml")
	if !bytes.Contains(ex, []byte("$schema=/usr/share/nfclone/nfclone.schema.json")) {
		t.Error("installed example does not point at the installed schema")
	}
	if o, err := exec.Command("getent", "passwd", "nfclone").Output(); err != nil {
		t.Errorf("user nfclone not created: %v", err)
	} else if f := strings.Split(strings.TrimSpace(string(o)), ":"); len(f) < 7 || f[6] != "/usr/sbin/nologin" {
		t.Errorf("user nfclone: %q", o)
	} else {
		t.Logf("user: %s", strings.TrimSpace(string(o)))
	}
	if st, err := os.Stat("/etc/nfclone"); err != nil || !st.IsDir() {
		t.Errorf("/etc/nfclone: %v", err)
	}
	// Nothing enabled, nothing started, no config written for it.
	for _, p := range []string{
		"/etc/systemd/system/multi-user.target.wants/nfclone.service",
		"/etc/nfclone/nfclone.yaml",
	} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists after dpkg -i", p)
		}
	}
	if o, err := exec.Command("pgrep", "-x", "-u", "nfclone", "nfclone").Output(); err == nil {
		t.Errorf("an nfclone process runs as user nfclone after dpkg -i: %s", o)
	}
	if mb, err := exec.LookPath("man"); err == nil {
		cmd := exec.Command(mb, "-w", "nfclone-run")
		if o, err := cmd.Output(); err != nil || !strings.Contains(string(o), "/usr/share/man/man8/nfclone-run.8.gz") {
			t.Errorf("man -w nfclone-run: %v %q", err, o)
		}
	}

	if o, err := exec.Command(dpkg, "-r", "nfclone").CombinedOutput(); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, o)
	}
	for _, f := range debFiles {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s still there after dpkg -r", f)
		}
	}
	if o, err := exec.Command(dpkg, "--purge", "nfclone").CombinedOutput(); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, o)
	}
	if _, err := os.Stat("/etc/nfclone"); err == nil {
		t.Error("/etc/nfclone (empty) still there after dpkg --purge")
	}
}
