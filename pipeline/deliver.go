package pipeline

import "github.com/nfclone/nfclone/packet"

// Sender is what Deliver sends batches to (a sink).
type Sender interface {
	Send(batch []*packet.Packet) (int, error)
}

// Deliver returns a worker send function: it sends each batch to s and
// accounts the outcome in the ledger of each copy's session (ledgers is
// indexed by Packet.Session; a session out of range goes to ledgers[0]).
func Deliver(s Sender, ledgers ...*Ledger) func(batch []*packet.Packet) {
	return func(batch []*packet.Packet) {
		s.Send(batch)
		if len(ledgers) == 0 {
			return
		}
		if len(ledgers) == 1 {
			ledgers[0].Account(batch)
			return
		}
		start := 0
		for i := 1; i <= len(batch); i++ {
			if i == len(batch) || batch[i].Session != batch[start].Session {
				l := ledgers[0]
				if s := batch[start].Session; s >= 0 && s < len(ledgers) {
					l = ledgers[s]
				}
				l.Account(batch[start:i])
				start = i
			}
		}
	}
}
