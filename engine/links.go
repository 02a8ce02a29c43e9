package engine

import (
	"context"
	"log/slog"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// linkDebounce collects a burst of link events (a veth pair is two links,
// each with several messages) into one re-bind.
const linkDebounce = 100 * time.Millisecond

// watchLinks signals out (without blocking) when links were added, removed
// or changed, until ctx ends. The engine compares interface indexes and
// re-applies only when one it uses changed.
func watchLinks(ctx context.Context, log *slog.Logger, out chan<- struct{}) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK})
	if err != nil {
		log.Error("watching interfaces: interfaces that come and go will not be followed", "err", err)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		c.Close() // unblocks Receive
	}()
	defer func() { <-done }()
	events := make(chan struct{}, 1)
	go func() {
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("reading link events", "err", err)
				}
				close(events)
				return
			}
			if len(msgs) > 0 {
				select {
				case events <- struct{}{}:
				default:
				}
			}
		}
	}()
	for {
		if _, ok := <-events; !ok {
			return
		}
		t := time.NewTimer(linkDebounce)
	collect:
		for {
			select {
			case _, ok := <-events:
				if !ok {
					t.Stop()
					return
				}
			case <-t.C:
				break collect
			}
		}
		select {
		case out <- struct{}{}:
		default:
		}
	}
}
