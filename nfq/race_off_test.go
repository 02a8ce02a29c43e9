//go:build !race

package nfq

const raceEnabled = false
