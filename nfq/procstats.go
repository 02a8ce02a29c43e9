package nfq

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// QueueStats is one line of /proc/net/netfilter/nfnetlink_queue.
type QueueStats struct {
	Queue        uint16 `json:"queue"`
	PortID       uint32 `json:"peer_portid"`
	Total        uint64 `json:"queue_total"`
	CopyMode     uint8  `json:"copy_mode"`
	CopyRange    uint32 `json:"copy_range"`
	QueueDropped uint64 `json:"queue_dropped"`
	UserDropped  uint64 `json:"user_dropped"`
	IDSequence   uint64 `json:"id_sequence"`
}

// ParseQueueStats parses the nfnetlink_queue proc file: per line
// "queue_number peer_portid queue_total copy_mode copy_range queue_dropped
// user_dropped id_sequence 1". Blank lines are skipped; a line with fewer
// than 8 numeric columns is an error.
func ParseQueueStats(b []byte) ([]QueueStats, error) {
	var out []QueueStats
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		f := bytes.Fields(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		if len(f) < 8 {
			return nil, fmt.Errorf("nfnetlink_queue line %d: %d columns, want >= 8", line, len(f))
		}
		var v [8]uint64
		for i := 0; i < 8; i++ {
			n, err := strconv.ParseUint(string(f[i]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("nfnetlink_queue line %d column %d: %w", line, i+1, err)
			}
			v[i] = n
		}
		if v[0] > 0xffff {
			return nil, fmt.Errorf("nfnetlink_queue line %d: queue %d out of range", line, v[0])
		}
		out = append(out, QueueStats{
			Queue: uint16(v[0]), PortID: uint32(v[1]), Total: v[2], CopyMode: uint8(v[3]),
			CopyRange: uint32(v[4]), QueueDropped: v[5], UserDropped: v[6], IDSequence: v[7],
		})
	}
	return out, sc.Err()
}

// WaitQueuesEmpty polls the nfnetlink_queue proc file at path until none
// of queues holds a packet waiting for its verdict (queue_total 0; a queue
// not listed holds none), or timeout passes: then it says which queue
// still holds how many.
func WaitQueuesEmpty(path string, queues []uint16, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		all, err := ParseQueueStats(b)
		if err != nil {
			return err
		}
		var busy []string
		for _, st := range all {
			if st.Total > 0 && slices.Contains(queues, st.Queue) {
				busy = append(busy, fmt.Sprintf("queue %d holds %d", st.Queue, st.Total))
			}
		}
		if len(busy) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %s", timeout, strings.Join(busy, ", "))
		}
		time.Sleep(time.Millisecond)
	}
}

// StatsPath is the kernel's nfnetlink_queue table of the calling process's
// network namespace.
const StatsPath = "/proc/net/netfilter/nfnetlink_queue"
