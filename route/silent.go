package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Interfaces nfclone creates (veth pairs, VXLAN devices) carry copies and
// nothing else: left to the kernel's defaults a new device that comes up
// gets an IPv6 link-local address, probes it (neighbour solicitations) and
// reports its multicast groups (MLD) — packets of its own inside the mirror
// or the tunnel. So before a created device is brought up nfclone
//
//   - sets IFLA_INET6_ADDR_GEN_MODE to none (rtnetlink, IFLA_AF_SPEC): no
//     link-local address, no duplicate address detection, no router
//     solicitation;
//   - and sets net.ipv6.conf.<dev>.disable_ipv6 = 1: without an address the
//     kernel still sends MLD reports (from ::) for the groups a new device
//     joins (ff02::2 when the host forwards). rtnetlink cannot change an
//     interface's IPv6 devconf (IFLA_INET6_CONF is read-only), so this is a
//     write to the sysctl file, in the kernel's namespace, never a command.
//
// With no IPv4 address either, such a device sends nothing of its own.
//
// A VXLAN device, and the near end of a veth pair (the end copies are
// written to), keep IPv6 on: the kernel routes the IPv6 clones of
// kernel-routed sessions into them (to a made-up link-local next hop), and
// a device with IPv6 off drops them. It is silenced otherwise, before it
// comes up: first net.ipv6.conf.<dev>.force_mld_version = 1, then
// forwarding = 0, so it leaves ff02::2, which it joined when created on a
// forwarding host, without a word (an MLDv1 host only says "done" for a
// group it reported; MLDv2 queues a state change, sent once the device is
// up: the order matters), and joins no other reported group (ff02::1 and
// ff01::1 never are).

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const in6AddrGenModeNone = 1

// silence applies both to the link (name, index) (the sysctls for a device
// that keeps IPv6 on to one that does); a kernel without IPv6 has nothing
// to silence.
func (k *nlKernel) silence(name string, index int, keepIPv6 bool) error {
	if err := k.setAddrGenModeNone(index); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("IPv6 address generation off on %s: %w", name, err)
	}
	conf := [][2]string{{"disable_ipv6", "1"}}
	if keepIPv6 {
		// MLDv1 first: leaving ff02::2 in MLDv2 queues a state change.
		conf = [][2]string{{"force_mld_version", "1"}, {"forwarding", "0"}}
	}
	for _, kv := range conf {
		err := k.inNetNS(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/"+kv[0], []byte(kv[1]+"\n"), 0)
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("IPv6 %s = %s on %s: %w", kv[0], kv[1], name, err)
		}
	}
	return nil
}

// setAddrGenModeNone sends RTM_SETLINK with
// IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE: NONE } }.
func (k *nlKernel) setAddrGenModeNone(index int) error {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.AF_INET6, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(unix.IFLA_INET6_ADDR_GEN_MODE, in6AddrGenModeNone)
			return nil
		})
		return nil
	})
	return k.setLink(index, ae)
}

// setLink sends RTM_SETLINK for the link index with the attributes of ae
// (ones the rtnetlink package does not know).
func (k *nlKernel) setLink(index int, ae *netlink.AttributeEncoder) error {
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	ifi := make([]byte, unix.SizeofIfInfomsg)
	ifi[0] = unix.AF_UNSPEC
	binary.NativeEndian.PutUint32(ifi[4:8], uint32(index))
	_, err = k.raw.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_SETLINK, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(ifi, attrs...),
	})
	return err
}

// inNetNS runs fn on a thread in the kernel's network namespace (files
// under /proc/sys/net are those of the opening thread's namespace).
func (k *nlKernel) inNetNS(fn func() error) error {
	if k.netns < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		if err := unix.Setns(k.netns, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread stays locked and dies with the goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leaving the network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
