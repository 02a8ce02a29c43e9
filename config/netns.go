package config

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// NetNS names the network namespace of this process as the kernel does
// ("net:[4026531840]"); "" if it cannot be read.
func NetNS() string {
	s, _ := os.Readlink("/proc/self/ns/net")
	return s
}

// initNetNS is the host's network namespace on kernels that give it a
// fixed inode (PROC_NET_INIT_INO, 0xEFFFFFF9).
const initNetNS = "net:[4026531833]"

// defaultStateDir is the default state_dir of this network namespace:
// DefaultStateDir in the host's, and DefaultStateDir/netns-<inode> in any
// other, so that nfclones in two namespaces never share a state file. The
// host's namespace is recognised by its fixed inode or as that of pid 1
// (or of kthreadd, when pid 1 cannot be inspected); when nothing tells, it
// is DefaultStateDir.
var defaultStateDir = sync.OnceValue(func() string {
	self := NetNS()
	if self == "" || self == initNetNS {
		return DefaultStateDir
	}
	host, err := os.Readlink("/proc/1/ns/net")
	if err != nil {
		comm, _ := os.ReadFile("/proc/2/comm")
		if strings.TrimSpace(string(comm)) != "kthreadd" {
			return DefaultStateDir
		}
		if host, err = os.Readlink("/proc/2/ns/net"); err != nil {
			return DefaultStateDir
		}
	}
	if self == host {
		return DefaultStateDir
	}
	ino := strings.TrimSuffix(strings.TrimPrefix(self, "net:["), "]")
	return filepath.Join(DefaultStateDir, "netns-"+ino)
})
