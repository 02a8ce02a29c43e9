package route

import (
	"fmt"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// wireNearEnd makes the near end of a veth pair nfclone created (index,
// name) hand the far end's readers (an IDS, tcpdump) what a wire carries,
// before it comes up. Left to the kernel's defaults a veth passes
// super-packets of up to 64 KiB through whole (TSO, GSO of every kind) and
// packets with an unfinished checksum (the host's own, and clones of
// those). So nfclone sets
//
//   - IFLA_GSO_MAX_SEGS 1 (rtnetlink): a packet of more than one segment
//     then gets no segmentation offload whatever its GSO type, and the
//     kernel cuts it into wire-sized segments as it enters the pair;
//   - tx-checksumming off (SIOCETHTOOL ETHTOOL_STXCSUM, in the kernel's
//     namespace; rtnetlink has no attribute for features): the kernel
//     completes every checksum as the packet enters the pair.
//
// A TAP port delivers what was on the wire; so does the pair. It is
// nfclone's own: nothing else changes.
func (k *nlKernel) wireNearEnd(index int, name string) error {
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(unix.IFLA_GSO_MAX_SEGS, 1)
	if err := k.setLink(index, ae); err != nil {
		return fmt.Errorf("gso_max_segs 1 on %s: %w", name, err)
	}
	return k.inNetNS(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("ethtool socket: %w", err)
		}
		defer unix.Close(fd)
		if err := ethtoolSet(fd, name, unix.ETHTOOL_STXCSUM, 0); err != nil {
			return fmt.Errorf("ethtool -K %s tx off: %w", name, err)
		}
		return nil
	})
}

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte // the union's size
}

// ethtoolSet runs a legacy ETHTOOL_S* command with one value (SIOCETHTOOL).
func ethtoolSet(fd int, name string, cmd, v uint32) error {
	if len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", name)
	}
	val := ethtoolValue{cmd: cmd, data: v}
	var ifr ifreqData
	copy(ifr.name[:], name)
	ifr.data = unsafe.Pointer(&val)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return e
	}
	return nil
}
