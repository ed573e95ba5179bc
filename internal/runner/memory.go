package runner

import (
	"errors"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// mmapAllocator backs each linear memory with its own reservation of
// address space, as large as the memory's maximum, committed as the
// guest grows into it. Growing never copies (wazero's default allocator
// copies the whole memory on every grow), and committed pages are
// populated up front (MADV_POPULATE_WRITE), up to populateMax a commit,
// which on the VMs measured costs about a twentieth of a page fault per
// page (BENCHMARKS.md).
//
// Every grow after a memory's first allocation asks budget, which refuses
// it (memory.grow then returns -1) when the container's memory limit
// would leave too little for the runner. The first allocation, the
// module's declared minimum, is checked before instantiation instead
// (memoryBudget.checkInitial): wazero cannot fail it. Where the module's
// memories could not be read before (a section past what wasmmod reads),
// checkFirst has the first allocation checked as well, and refused with a
// memoryRefused panic, which instantiate turns into an error.
type mmapAllocator struct {
	budget     *memoryBudget
	checkFirst bool
}

// memoryRefused is the panic of a first allocation that does not fit.
type memoryRefused struct{ err error }

// first counts a memory's first allocation of n bytes, checking it first
// if check.
func (b *memoryBudget) first(n uint64, check bool) {
	if check {
		if err := b.checkInitial(n); err != nil {
			panic(memoryRefused{err})
		}
	}
	b.add(n)
}

// Allocate implements experimental.MemoryAllocator. If the address space
// cannot be reserved it falls back to a memory on the Go heap.
func (a mmapAllocator) Allocate(cap, max uint64) experimental.LinearMemory {
	if max < cap {
		max = cap
	}
	buf, err := unix.Mmap(-1, 0, int(roundPage(max)), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return &heapMemory{max: max, budget: a.budget, checkFirst: a.checkFirst}
	}
	return &mmapMemory{buf: buf, budget: a.budget, checkFirst: a.checkFirst}
}

// heapMemory is a linear memory on the Go heap, grown by copying: while
// it grows, the old and the new copy are both held.
type heapMemory struct {
	buf    []byte
	max    uint64
	budget *memoryBudget
	grown  bool // past the first allocation
	// checkFirst: see mmapAllocator.
	checkFirst bool
}

// Reallocate implements experimental.LinearMemory.
func (m *heapMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	first := !m.grown
	m.grown = true
	if size > uint64(cap(m.buf)) {
		newCap := min(max(size, 2*uint64(cap(m.buf))), m.max)
		if first {
			m.budget.first(newCap, m.checkFirst)
		} else if !m.budget.allow(newCap-uint64(cap(m.buf)), newCap) {
			return nil
		}
		grown := make([]byte, size, newCap)
		copy(grown, m.buf)
		m.buf = grown
	}
	m.buf = m.buf[:size]
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *heapMemory) Free() {
	m.budget.release(uint64(cap(m.buf)))
	m.buf = nil
}

// mmapMemory is one reservation; buf[:committed] is readable and writable.
type mmapMemory struct {
	buf       []byte
	committed uint64
	budget    *memoryBudget
	grown     bool // past the first allocation
	// checkFirst: see mmapAllocator.
	checkFirst bool
}

// Reallocate implements experimental.LinearMemory.
func (m *mmapMemory) Reallocate(size uint64) []byte {
	if size > uint64(len(m.buf)) {
		return nil
	}
	first := !m.grown
	m.grown = true
	if size > m.committed {
		end := roundPage(size)
		n := end - m.committed
		if first {
			m.budget.first(n, m.checkFirst) // the declared minimum, checked before instantiation
		} else if !m.budget.allow(n, n) {
			return nil
		}
		grow := m.buf[m.committed:end]
		if err := unix.Mprotect(grow, unix.PROT_READ|unix.PROT_WRITE); err != nil {
			m.budget.release(n)
			return nil
		}
		// Best effort: without MADV_POPULATE_WRITE (Linux < 5.14) pages
		// fault in as they are touched. ENOMEM: the container's memory
		// cgroup could not take them after all. Beyond populateMax a commit
		// is left to fault in as the guest touches it: a module that
		// declares gigabytes it never uses costs the node nothing.
		if err := unix.Madvise(grow[:min(uint64(len(grow)), populateMax)], unix.MADV_POPULATE_WRITE); err != nil && !errors.Is(err, unix.EINVAL) {
			unix.Mprotect(grow, unix.PROT_NONE)
			unix.Madvise(grow, unix.MADV_DONTNEED)
			m.budget.release(n)
			if errors.Is(err, unix.ENOMEM) {
				m.budget.refuse()
			}
			return nil
		}
		m.committed = end
	}
	return m.buf[:size:size]
}

// Free implements experimental.LinearMemory.
func (m *mmapMemory) Free() {
	if m.buf != nil {
		m.budget.release(m.committed)
		unix.Munmap(m.buf)
		m.buf, m.committed = nil, 0
	}
}

// populateMax is the most of one commit populated up front.
const populateMax = 64 << 20

// roundPage rounds n up to the host's page size, the granularity of
// mprotect and so of commits (4 KiB here; 16 or 64 KiB on some arm64).
func roundPage(n uint64) uint64 {
	page := uint64(unix.Getpagesize())
	return (n + page - 1) &^ (page - 1)
}
