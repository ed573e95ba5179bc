package runtime

import (
	"errors"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// mmapAllocator backs each linear memory with its own reservation of
// address space, as large as the memory's maximum, committed as the
// guest grows into it. Growing never copies (wazero's default allocator
// copies the whole memory on every grow), and committed pages are
// populated up front (MADV_POPULATE_WRITE), which on the VMs measured
// costs about a twentieth of a page fault per page (BENCHMARKS.md).
type mmapAllocator struct{}

// Allocate implements experimental.MemoryAllocator. If the address space
// cannot be reserved it falls back to a memory on the Go heap.
func (mmapAllocator) Allocate(cap, max uint64) experimental.LinearMemory {
	if max < cap {
		max = cap
	}
	buf, err := unix.Mmap(-1, 0, int(roundPage(max)), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return &heapMemory{max: max}
	}
	return &mmapMemory{buf: buf}
}

// heapMemory is a linear memory on the Go heap, grown by copying.
type heapMemory struct {
	buf []byte
	max uint64
}

// Reallocate implements experimental.LinearMemory.
func (m *heapMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size > uint64(cap(m.buf)) {
		grown := make([]byte, size, max(size, 2*uint64(cap(m.buf))))
		copy(grown, m.buf)
		m.buf = grown
	}
	m.buf = m.buf[:size]
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *heapMemory) Free() { m.buf = nil }

// mmapMemory is one reservation; buf[:committed] is readable and writable.
type mmapMemory struct {
	buf       []byte
	committed uint64
}

// Reallocate implements experimental.LinearMemory.
func (m *mmapMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	if size > m.committed {
		end := roundPage(size)
		grow := m.buf[m.committed:end]
		if err := unix.Mprotect(grow, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil
		}
		// Best effort: without MADV_POPULATE_WRITE (Linux < 5.14) pages
		// fault in as they are touched.
		if err := unix.Madvise(grow, unix.MADV_POPULATE_WRITE); err != nil && !errors.Is(err, unix.EINVAL) {
			return nil
		}
		m.committed = end
	}
	return m.buf[:size:size]
}

// Free implements experimental.LinearMemory.
func (m *mmapMemory) Free() {
	if m.buf != nil {
		unix.Munmap(m.buf)
		m.buf, m.committed = nil, 0
	}
}

// roundPage rounds n up to the host's page size, the granularity of
// mprotect and so of commits (4 KiB here; 16 or 64 KiB on some arm64).
func roundPage(n uint64) uint64 {
	page := uint64(unix.Getpagesize())
	return (n + page - 1) &^ (page - 1)
}
