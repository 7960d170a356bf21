//go:build race

package transporttest_test

// raceEnabled: the race detector drops a quarter of what is put in a
// sync.Pool, so the server's pooled read buffers are allocated again at
// random and allocation bounds do not hold.
const raceEnabled = true
