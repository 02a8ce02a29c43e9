package gso

import "errors"

// The kinds of failure Split reports; each error it returns wraps one of
// them (errors.Is), with a reason that names the check that failed.
var (
	// ErrMalformed: a header is inconsistent (version, header length,
	// extension header chain, IPv4 options, TCP data offset).
	ErrMalformed = errors.New("malformed packet")
	// ErrTruncated: the IP length says more than the buffer holds (a copy
	// cut by a copy range or snaplen): there is not enough to cut.
	ErrTruncated = errors.New("truncated packet")
	// ErrDontFragment: an IPv4 datagram other than TCP or UDP GSO is larger
	// than the MTU and has DF set.
	ErrDontFragment = errors.New("larger than the mtu with DF set")
	// ErrMTU: the MTU cannot hold the headers and 8 bytes of payload.
	ErrMTU = errors.New("mtu too small")
	// ErrTooMany: more packets would result than out has buffers.
	ErrTooMany = errors.New("more packets than output buffers")
	// ErrShortBuffer: an output buffer's capacity is below the packet
	// written into it (callers should give buffers of cap >= mtu).
	ErrShortBuffer = errors.New("output buffer too small")
)

// Error is the error Split returns: Reason says which check failed and Err
// is one of the kinds above. The errors are allocated once, so a flood of
// bad packets costs no allocation.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string { return "gso: " + e.Reason + ": " + e.Err.Error() }

// Unwrap returns the kind of failure.
func (e *Error) Unwrap() error { return e.Err }

func newErr(reason string, kind error) *Error { return &Error{Reason: reason, Err: kind} }

var (
	errShort       = newErr("shorter than an IP header", ErrMalformed)
	errVersion     = newErr("IP version neither 4 nor 6", ErrMalformed)
	errIHL         = newErr("IPv4 header length below 20 or above the total length", ErrMalformed)
	errTotLen      = newErr("IP length beyond the buffer", ErrTruncated)
	errExtHdr      = newErr("IPv6 extension header past the payload length", ErrMalformed)
	errHopByHop    = newErr("IPv6 hop-by-hop header not first", ErrMalformed)
	errRouting     = newErr("IPv6 routing header with segments left and no known final destination", ErrMalformed)
	errTCPHdr      = newErr("TCP header shorter than 20 bytes or past the IP length", ErrMalformed)
	errUDPHdr      = newErr("UDP header past the IP length", ErrMalformed)
	errOptions     = newErr("IPv4 option length invalid", ErrMalformed)
	errFragOffset  = newErr("fragment offset beyond 65528", ErrMalformed)
	errDF          = newErr("IPv4 datagram", ErrDontFragment)
	errMTUSegment  = newErr("no room for 8 bytes of payload after the headers", ErrMTU)
	errMTUFragment = newErr("no room for 8 bytes of fragment payload after the headers", ErrMTU)
	errTooMany     = newErr("Split", ErrTooMany)
	errShortBuffer = newErr("Split", ErrShortBuffer)
)
