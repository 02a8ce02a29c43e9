package collect

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tapDev is a non-persistent TAP device: it exists while its descriptor is
// open.
type tapDev struct {
	fd   int
	name string
}

// openTap creates the TAP device (IFF_TAP|IFF_NO_PI: writes are whole
// Ethernet frames), turns IPv6 off on it (best effort: no router
// solicitations or addresses on a monitoring port), and brings it up with
// IFF_NOARP. The host stack ignores frames not addressed to the tap's own
// MAC, so analysers see everything and the host answers nothing.
func openTap(name string) (*tapDev, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("collect: --tap %s: open /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("collect: --tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("collect: --tap %s: create: %w", name, err)
	}
	t := &tapDev{fd: fd, name: ifr.Name()}
	os.WriteFile("/proc/sys/net/ipv6/conf/"+t.name+"/disable_ipv6", []byte("1"), 0)
	if err := setUp(t.name); err != nil {
		t.close()
		return nil, fmt.Errorf("collect: --tap %s: bring up: %w", name, err)
	}
	return t, nil
}

func setUp(name string) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP | unix.IFF_NOARP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}

func (t *tapDev) write(frame []byte) error {
	for {
		_, err := unix.Write(t.fd, frame)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}

func (t *tapDev) close() error {
	if t.fd < 0 {
		return nil
	}
	err := unix.Close(t.fd)
	t.fd = -1
	return err
}
