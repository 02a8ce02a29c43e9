// Package status holds the wire types of a running daemon's snapshot: what
// `nfclone status` and `top` show and metrics export. The engine fills
// them; statusapi and metrics read them without depending on the engine.
package status

import (
	"time"

	"github.com/nfclone/nfclone/nfq"
	"github.com/nfclone/nfclone/pipeline"
	"github.com/nfclone/nfclone/sink"
)

// Status is a snapshot of the running daemon, for metrics and `nfclone status`.
type Status struct {
	PID        int               `json:"pid"`
	Version    string            `json:"version"`
	Started    time.Time         `json:"started"`
	Config     string            `json:"config,omitempty"`
	Table      string            `json:"table"`
	Generation uint64            `json:"generation"` // successful rule applies (1 after start, +1 per reload or re-bind)
	LastReload *ReloadStatus     `json:"last_reload,omitempty"`
	Sessions   []SessionStatus   `json:"sessions"`
	Interfaces []InterfaceStatus `json:"interfaces"`
	// Drift lists what of the routing plan the kernel does not hold and
	// nfclone cannot put back yet (a device missing or down), one line each.
	Drift []string `json:"routing_drift,omitempty"`
}

// ReloadStatus tells how the last reload went.
type ReloadStatus struct {
	Time  time.Time `json:"time"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// SessionStatus is one session. For dup sessions the counters come from the
// kernel's rule counters (Seen: packets entering the session's filter;
// Copied: packets reaching its copy statement); for queue/log sessions from
// the ledger.
type SessionStatus struct {
	Name   string `json:"name"`
	Method string `json:"method"`
	// Hold: a queue session that holds the originals until read (hold: true).
	Hold    bool     `json:"hold,omitempty"`
	State   string   `json:"state"` // running | waiting (an interface or a gateway route is missing)
	Missing []string `json:"missing,omitempty"`
	// MissingRoutes are the gateway routes the session's copies need that
	// are not in the kernel (copies to them fail, counted as send errors,
	// until the route is back).
	MissingRoutes []string `json:"missing_routes,omitempty"`
	// Skipped: what the session's selectors kept from being copied (dup
	// sessions; userspace sessions have it in their ledger).
	Skipped *pipeline.Skipped  `json:"skipped,omitempty"`
	Seen    Counter            `json:"seen"`
	Copied  Counter            `json:"copied"`
	Ledger  *pipeline.Snapshot `json:"ledger,omitempty"`
	Queue   *QueueStatus       `json:"queue,omitempty"`
	Readers []ReaderStatus     `json:"readers,omitempty"`
	Targets []TargetStatus     `json:"targets"`
}

// Counter is packets and bytes.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// QueueStatus is the copy queue of a userspace session.
type QueueStatus struct {
	Depth   int `json:"depth"`
	Cap     int `json:"cap"`
	Workers int `json:"workers"`
}

// ReaderStatus is one NFQUEUE or NFLOG reader.
type ReaderStatus struct {
	Kind    string          `json:"kind"` // nfqueue | nflog
	Num     int             `json:"num"`  // queue number or group
	Running bool            `json:"running"`
	Stats   nfq.ReaderStats `json:"stats"`
}

// TargetStatus is one target of a session.
type TargetStatus struct {
	Name  string      `json:"name"`
	Kind  string      `json:"kind"`
	Stats *sink.Stats `json:"stats,omitempty"` // userspace targets
	// Clients are a pcap-over-ip target's connected clients.
	Clients []sink.PcapClientStats `json:"clients,omitempty"`
	// Kernel: the kernel sends this target's copies, the clones of a
	// kernel-routed queue session (queue.kernel_route); Stats are the
	// session ledger's copies, what the kernel was given to send.
	Kernel bool `json:"kernel,omitempty"`
	// KernelTCP: the kernel sends the copies of TCP packets, nfclone the
	// rest (a log session, queue.log_kernel_route: tcp); Stats count both.
	KernelTCP bool `json:"kernel_tcp,omitempty"`
	// Tunnel is what nfclone's segment-size program on the target's VXLAN
	// device did (queue.vxlan_kernel_route: the kernel sends into it), nil
	// when the device has none.
	Tunnel *TunnelCut `json:"tunnel_cut,omitempty"`
}

// TunnelCut counts what the segment-size program on a VXLAN device saw
// since it was attached (package gsotrim).
type TunnelCut struct {
	// InnerMTU is the longest inner IP packet the path to the remote takes.
	InnerMTU int `json:"inner_mtu"`
	// Cut are the TCP super-packets whose segment size it lowered to fit.
	Cut uint64 `json:"cut"`
	// Fragmented are the single packets longer than InnerMTU: the kernel
	// sent each in two outer fragments.
	Fragmented uint64 `json:"fragmented"`
}

// InterfaceStatus is an interface a session depends on.
type InterfaceStatus struct {
	Name    string   `json:"name"`
	Present bool     `json:"present"`
	Index   int      `json:"index,omitempty"`
	UsedBy  []string `json:"used_by"`
	// Created is true for interfaces nfclone created (and re-creates when
	// someone deletes them).
	Created bool `json:"created,omitempty"`
}
