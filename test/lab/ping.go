package lab

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Ping runs `ping [-6] -n -c count -i interval -W 1 dst` inside namespace ns (-6 when dst
// contains a colon) and returns the counts from its summary line, duplicates included
// ("+N duplicates"). Losing packets is not an error: err is set only when ping could not
// run or printed no summary. Intervals below 200 ms need root (the lab runs as root).
func Ping(ctx context.Context, l *Lab, ns, dst string, count int, interval time.Duration) (sent, received, dupes int, err error) {
	args := []string{"-n", "-c", strconv.Itoa(count), "-i", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64), "-W", "1"}
	if strings.Contains(dst, ":") {
		args = append([]string{"-6"}, args...)
	}
	args = append(args, dst)
	out, runErr := l.Exec(ctx, ns, "ping", args...)
	sent, received, dupes, err = ParsePingSummary(string(out))
	if err != nil {
		if runErr != nil {
			return 0, 0, 0, fmt.Errorf("ping %s in %s: %w (output: %s)", dst, ns, runErr, out)
		}
		return 0, 0, 0, fmt.Errorf("ping %s in %s: %w (output: %s)", dst, ns, err, out)
	}
	return sent, received, dupes, nil
}

var (
	pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingDupesRE   = regexp.MustCompile(`\+(\d+) duplicates?`)
)

// ParsePingSummary parses the summary of iputils (or BusyBox) ping output, e.g.
// "5 packets transmitted, 5 received, +5 duplicates, 0% packet loss, time 4005ms".
func ParsePingSummary(out string) (sent, received, dupes int, err error) {
	for _, line := range strings.Split(out, "\n") {
		m := pingSummaryRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		sent, _ = strconv.Atoi(m[1])
		received, _ = strconv.Atoi(m[2])
		if d := pingDupesRE.FindStringSubmatch(line); d != nil {
			dupes, _ = strconv.Atoi(d[1])
		}
		return sent, received, dupes, nil
	}
	return 0, 0, 0, fmt.Errorf("no ping summary line in output")
}
