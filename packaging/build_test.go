package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// buildNfclone builds ./cmd/nfclone into a temporary directory (or skips
// when there is no go tool) and returns the binary's path.
func buildNfclone(t *testing.T, env ...string) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go not found")
	}
	bin := filepath.Join(t.TempDir(), "nfclone")
	build := exec.Command(gobin, "build", "-o", bin, "./cmd/nfclone")
	build.Dir = ".."
	build.Env = append(os.Environ(), env...)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/nfclone: %v\n%s", err, out)
	}
	return bin
}
