package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// slotPoll is how often a compile waiting for a slot tries them again.
const slotPoll = 15 * time.Millisecond

// DefaultMaxCompiles is the number of compiles run at once on the node
// unless configured: one per CPU.
func DefaultMaxCompiles() int { return runtime.NumCPU() }

// slots bound the compiles running at once on the node: a compile holds an
// flock(2) on one of the files dir/0 … dir/n-1, shared by every process.
// Processes configured with different bounds share the files of the
// smaller, so the node runs at most the largest bound at once.
type slots struct {
	// dir holds the slot files.
	dir string
	// n is the number of slots.
	n int
}

// acquire takes a free slot, waiting while all are busy until one frees
// or ctx ends, and returns the function that releases it.
func (s slots) acquire(ctx context.Context) (func(), error) {
	for {
		f, err := s.try()
		if err != nil {
			return nil, err
		}
		if f != nil {
			return func() { f.Close() }, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a compile slot (all %d busy): %w", s.n, ctx.Err())
		case <-time.After(slotPoll):
		}
	}
}

// try takes the first free slot, returning its locked file, or nil if
// every slot is busy. The files are opened one at a time, and closed again
// when busy, so that a waiter holds no descriptors between tries.
func (s slots) try() (*os.File, error) {
	for i := 0; i < s.n; i++ {
		f, err := os.OpenFile(filepath.Join(s.dir, strconv.Itoa(i)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("compile slot %d: %w", i, err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("compile slot %d: %w", i, err)
		}
	}
	return nil, nil
}
