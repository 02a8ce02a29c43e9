// Package packaging holds no code: it is the home of nfclone's packaging
// files (systemd unit, Kubernetes DaemonSet, example configuration) and of
// the tests that check them (systemd-analyze verify, manifest structure,
// the example configurations pass nfclone's own validation).
package packaging
