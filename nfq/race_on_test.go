//go:build race

package nfq

const raceEnabled = true
