package config

import "testing"

// tap honours NFCLONE_STATE_DIR like run; --state-dir still wins.
func TestTapStateDirFromEnv(t *testing.T) {
	t.Setenv("NFCLONE_STATE_DIR", "/tmp/nfc-env")
	c, err := Tap([]string{"e0>e1"}, TapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/tmp/nfc-env" {
		t.Fatalf("state_dir %q, want NFCLONE_STATE_DIR", c.StateDir)
	}
	c, err = Tap([]string{"e0>e1"}, TapOptions{StateDir: "/tmp/nfc-flag"})
	if err != nil || c.StateDir != "/tmp/nfc-flag" {
		t.Fatalf("state_dir %q %v, want the flag's", c.StateDir, err)
	}
}

// In the host's network namespace the default state_dir is the documented
// one; elsewhere it is keyed by the namespace.
func TestDefaultStateDirHere(t *testing.T) {
	got := defaultStateDir()
	if NetNS() == initNetNS && got != DefaultStateDir {
		t.Fatalf("host namespace: %q, want %q", got, DefaultStateDir)
	}
	if got != DefaultStateDir && got != DefaultStateDir+"/netns-"+NetNS()[5:len(NetNS())-1] {
		t.Fatalf("default state_dir %q", got)
	}
}
