// Package strftime expands the strftime(3) conversions that capture file
// names use (as `tcpdump -G` does): %Y %y %m %d %H %M %S %j %s %%.
package strftime

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Validate reports the first conversion Format does not know.
func Validate(pattern string) error {
	for i := 0; i < len(pattern); i++ {
		if pattern[i] != '%' {
			continue
		}
		if i+1 == len(pattern) {
			return fmt.Errorf("%q ends with a lone %%", pattern)
		}
		i++
		if !strings.ContainsRune("YymdHMSjs%", rune(pattern[i])) {
			return fmt.Errorf("%q: %%%c is not supported (use %%Y %%y %%m %%d %%H %%M %%S %%j %%s %%%%)", pattern, pattern[i])
		}
	}
	return nil
}

// Has reports whether pattern has a time conversion (a name that changes
// with the time).
func Has(pattern string) bool {
	return strings.Contains(strings.ReplaceAll(pattern, "%%", ""), "%")
}

// Format expands pattern for t (in t's location). Unknown conversions are
// kept as they are.
func Format(pattern string, t time.Time) string {
	if !strings.Contains(pattern, "%") {
		return pattern
	}
	var b strings.Builder
	two := func(n int) {
		if n < 10 {
			b.WriteByte('0')
		}
		b.WriteString(strconv.Itoa(n))
	}
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		if c != '%' || i+1 == len(pattern) {
			b.WriteByte(c)
			continue
		}
		i++
		switch pattern[i] {
		case 'Y':
			b.WriteString(strconv.Itoa(t.Year()))
		case 'y':
			two(t.Year() % 100)
		case 'm':
			two(int(t.Month()))
		case 'd':
			two(t.Day())
		case 'H':
			two(t.Hour())
		case 'M':
			two(t.Minute())
		case 'S':
			two(t.Second())
		case 'j':
			fmt.Fprintf(&b, "%03d", t.YearDay())
		case 's':
			b.WriteString(strconv.FormatInt(t.Unix(), 10))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(pattern[i])
		}
	}
	return b.String()
}
