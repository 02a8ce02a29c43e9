package engine

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// A host error keeps its cause: errors.Is finds both ErrHost and the
// errno, and the message is the operation and the cause.
func TestHostErrWrapsCause(t *testing.T) {
	err := fmt.Errorf("starting: %w", hostErr("opening rtnetlink: %v", unix.EPERM))
	if !errors.Is(err, ErrHost) || !errors.Is(err, unix.EPERM) {
		t.Fatalf("errors.Is lost the cause or the kind: %v", err)
	}
	if want := "starting: the host cannot do it: opening rtnetlink: operation not permitted"; err.Error() != want {
		t.Fatalf("message %q, want %q", err.Error(), want)
	}
}
