package runner

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/wasmmod"
	cg "github.com/containerd/cgroups/v3"
	"github.com/moby/sys/mountinfo"
	"github.com/tetratelabs/wazero"
)

// MemoryMargin is what the runner keeps free below the container's memory
// limit when the guest grows its linear memory: room for what the runner
// and the kernel take after the grow (the runner's Go heap between
// collections, WASI calls, page tables), which the kernel charges to the
// container as well. A grow that would leave less fails: memory.grow
// returns -1. Measured (`make bench`, BENCH_ONLY=margin; BENCHMARKS.md,
// "The memory guard's margin"): a Go guest and a hand-written one grown
// until refused under 64 MiB took at most 0.38 MiB past the guard's count
// (file pages included). The rest is kept for what was not measured: the
// runner's buffers for a server's WASI I/O, and the reading's age (see
// budgetTTL).
const MemoryMargin = 8 << 20

// memoryBudget decides whether the guest's linear memory may grow, from
// the container's memory cgroup: a grow of n bytes is allowed while what
// the cgroup holds that the kernel cannot reclaim (its usage less its file
// pages: the runner, its compiled code, the guest memory committed so far,
// kernel memory, and any other process of the container) plus n plus
// MemoryMargin stays within the limit. The limit is read again as the
// guest grows, so an Update of the container's limit moves the cap.
// A nil budget allows every grow.
type memoryBudget struct {
	cg     *memoryCgroup
	margin uint64

	mu        sync.Mutex
	limit     uint64 // last read; 0: none
	used      uint64 // last read, plus what was committed since
	readAt    time.Time
	committed uint64 // linear memory committed by this runner
	// refused counts the grows refused at the limit, refusedLimit is the
	// limit at the last of them: see outOfMemory.
	refused      int
	refusedLimit uint64
	// grownTo is used after the last grow allowed (see Trace.GrownTo).
	grownTo uint64
}

// budgetTTL is how long a reading of the cgroup is trusted for a grow
// that fits in it, while the guest runs: it bounds how late a lowered
// limit is seen, and spares guests that grow a page at a time three file
// reads per grow. What the runner itself takes before the guest runs
// (loading the module) is read anew: see started.
const budgetTTL = 100 * time.Millisecond

// newMemoryBudget returns the budget of the memory cgroup this process is
// in, found through /proc/self/cgroup and the cgroup mounts in mountinfo
// (this process's /proc/self/mountinfo: runc mounts the container's own
// cgroups); nil if the container has none in view.
func newMemoryBudget(mounts []*mountinfo.Info) *memoryBudget {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	mcg, err := findMemoryCgroup(f, mounts)
	if err != nil || mcg == nil {
		return nil
	}
	b := &memoryBudget{cg: mcg, margin: MemoryMargin}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refresh() != nil {
		return nil
	}
	b.setGoLimit()
	return b
}

// refresh reads the limit and the memory used. Called with mu held.
func (b *memoryBudget) refresh() error {
	limit, err := b.cg.limit()
	if err != nil {
		return err
	}
	used, err := b.cg.used()
	if err != nil {
		return err
	}
	b.limit, b.used, b.readAt = limit, used, time.Now()
	return nil
}

// fits reports whether need more bytes of memory fit. Called with mu held.
func (b *memoryBudget) fits(need uint64) bool {
	return b.limit == 0 || b.used+need+b.margin <= b.limit
}

// allow reports whether the guest may commit n more bytes, needing need
// bytes more while doing so (n, or more for a grow that copies), and
// counts n if so.
func (b *memoryBudget) allow(n, need uint64) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.readAt) > budgetTTL || !b.fits(need) {
		if err := b.refresh(); err != nil {
			return true // the cgroup is gone from view: the kernel still enforces it
		}
	}
	if !b.fits(need) {
		b.refusedLocked()
		return false
	}
	b.count(n)
	b.grownTo = b.used
	return true
}

// refuse records a grow the container's memory cgroup could not take
// although the budget allowed it (the kernel's charge is more than the
// budget reads).
func (b *memoryBudget) refuse() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refusedLocked()
}

// refusedLocked records a grow refused at the limit. Called with mu held.
func (b *memoryBudget) refusedLocked() {
	b.refused++
	b.refusedLimit = b.limit
}

// OutOfMemory begins the line a runner writes on its reason pipe (and the
// guest's stderr) when its guest fails after a memory.grow was refused at
// the container's memory limit: the shim reports the container's exit as
// an OOM (a /tasks/oom event before the exit), as the kernel's OOM kill
// of a native process is.
const OutOfMemory = "containerd-shim-wasm: out of memory: "

// outOfMemory returns the OutOfMemory line for a guest that failed, if a
// grow was refused at the limit while it ran.
func (b *memoryBudget) outOfMemory() (string, bool) {
	if b == nil {
		return "", false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refused == 0 {
		return "", false
	}
	return fmt.Sprintf("%sthe guest failed after %d memory.grow(s) refused at the container's memory limit (%d MiB)",
		OutOfMemory, b.refused, b.refusedLimit>>20), true
}

// checkInitial fails if need bytes, the minimum sizes of the module's
// memories (which instantiation commits), do not fit in the budget.
func (b *memoryBudget) checkInitial(need uint64) error {
	if b == nil {
		return nil
	}
	return b.check(need, fmt.Sprintf("its initial memory (%d MiB)", need>>20))
}

// exportedMemory is the sum of the minimum sizes of the memories m
// exports: what wazero says of a module's memories. A memory that is not
// exported is not in it: initialMemory reads every memory.
func exportedMemory(m wazero.CompiledModule) uint64 {
	var need uint64
	seen := map[uint32]bool{}
	for _, mem := range m.ExportedMemories() {
		if !seen[mem.Index()] {
			seen[mem.Index()] = true
			need += uint64(mem.Min()) << 16
		}
	}
	return need
}

// initialMemory is the sum of the minimum sizes of every memory of the
// module bin, imported or defined, exported or not, and whether the
// module's sections up to the exports could be read (package wasmmod).
func initialMemory(bin []byte) (uint64, bool) {
	e, err := wasmmod.ReadExports(bytes.NewReader(bin))
	if err != nil {
		return 0, false
	}
	return e.InitialMemory(), true
}

// checkLoad fails if loading a module of moduleSize bytes whose compiled
// code takes codeSize bytes does not fit in the budget: the code is mapped
// into the runner, and decoding the module takes more than its size.
func (b *memoryBudget) checkLoad(moduleSize, codeSize uint64) error {
	if b == nil {
		return nil
	}
	need := moduleSize + codeSize
	return b.check(need, fmt.Sprintf("loading it (at least %d MiB: %d MiB of compiled code and its decoding)", need>>20, codeSize>>20))
}

// check fails, saying what needs it, if need more bytes do not fit.
func (b *memoryBudget) check(need uint64, what string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.refresh(); err != nil || b.fits(need) {
		return nil
	}
	return fmt.Errorf("%s does not fit in the container's memory limit (%d MiB) with the %d MiB the container uses and a margin of %d MiB",
		what, b.limit>>20, b.used>>20, b.margin>>20)
}

// traced fills what a Trace tells of the budget.
func (b *memoryBudget) traced(t *Trace) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t.GrownTo, t.Refused = b.grownTo, b.refused
}

// started has the next grow read the cgroup anew: loading the module took
// memory (its compiled code, its decoding) that no reading before holds.
// Called as the guest starts.
func (b *memoryBudget) started() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.readAt = time.Time{}
}

// add counts n bytes committed without asking.
func (b *memoryBudget) add(n uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.count(n)
}

// count counts n bytes committed. Called with mu held.
func (b *memoryBudget) count(n uint64) {
	b.used += n
	b.committed += n
	b.setGoLimit()
}

// release uncounts n bytes the guest no longer holds.
func (b *memoryBudget) release(n uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.committed -= min(n, b.committed)
	b.used -= min(n, b.used)
}

// setGoLimit keeps the runner's Go heap (a soft limit: the collector works
// harder as it nears it) within what the guest's memory leaves of the
// container's limit. Called with mu held.
func (b *memoryBudget) setGoLimit() {
	switch {
	case b.limit == 0:
		debug.SetMemoryLimit(math.MaxInt64)
	case b.limit > b.committed:
		debug.SetMemoryLimit(int64(min(b.limit-b.committed, unlimited)))
	}
}

// unlimited is the value above which a v1 memory.limit_in_bytes means no
// limit (the kernel reports the page-rounded maximum int64).
const unlimited = 1 << 62

// memoryCgroup names the files of one memory cgroup.
type memoryCgroup struct {
	// limitFile is memory.limit_in_bytes (v1) or memory.max (v2).
	limitFile string
	// usageFile is memory.usage_in_bytes (v1) or memory.current (v2):
	// everything the kernel charges to the cgroup, its own memory
	// included.
	usageFile string
	// statFile is memory.stat, whose fileKeys lines are the file pages of
	// the hierarchy (which the kernel reclaims before it fails a charge):
	// total_active_file and total_inactive_file (v1), active_file and
	// inactive_file (v2).
	statFile string
	fileKeys [2]string
}

// v1Memory and v2Memory are the files of the memory cgroup at dir.
func v1Memory(dir string) *memoryCgroup {
	return &memoryCgroup{
		limitFile: path.Join(dir, "memory.limit_in_bytes"),
		usageFile: path.Join(dir, "memory.usage_in_bytes"),
		statFile:  path.Join(dir, "memory.stat"),
		fileKeys:  [2]string{"total_active_file", "total_inactive_file"},
	}
}

func v2Memory(dir string) *memoryCgroup {
	return &memoryCgroup{
		limitFile: path.Join(dir, "memory.max"),
		usageFile: path.Join(dir, "memory.current"),
		statFile:  path.Join(dir, "memory.stat"),
		fileKeys:  [2]string{"active_file", "inactive_file"},
	}
}

// limit returns the cgroup's memory limit, 0 if it has none.
func (c *memoryCgroup) limit() (uint64, error) {
	s, err := readTrimmed(c.limitFile)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", c.limitFile, err)
	}
	if n >= unlimited {
		return 0, nil
	}
	return n, nil
}

// used returns what the cgroup holds that the kernel cannot reclaim, in
// bytes: its usage less its file pages.
func (c *memoryCgroup) used() (uint64, error) {
	s, err := readTrimmed(c.usageFile)
	if err != nil {
		return 0, err
	}
	usage, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", c.usageFile, err)
	}
	data, err := os.ReadFile(c.statFile)
	if err != nil {
		return 0, err
	}
	var file uint64
	found := 0
	for line := range bytes.Lines(data) {
		k, v, ok := strings.Cut(strings.TrimSpace(string(line)), " ")
		if ok && (k == c.fileKeys[0] || k == c.fileKeys[1]) {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s: %w", c.statFile, k, err)
			}
			file += n
			found++
		}
	}
	if found != 2 {
		return 0, fmt.Errorf("%s has no %s or %s", c.statFile, c.fileKeys[0], c.fileKeys[1])
	}
	return usage - min(file, usage), nil
}

// readTrimmed reads a one-line file.
func readTrimmed(name string) (string, error) {
	data, err := os.ReadFile(name)
	return strings.TrimSpace(string(data)), err
}

// findMemoryCgroup finds the memory cgroup of a process from its
// /proc/PID/cgroup and the mounts of /proc/PID/mountinfo. A v1 memory controller wins
// over the unified hierarchy (on hybrid hosts the v2 mount holds no
// memory controller).
func findMemoryCgroup(cgroupFile io.Reader, mounts []*mountinfo.Info) (*memoryCgroup, error) {
	v1, v2Path, err := cg.ParseCgroupFromReaderUnified(cgroupFile)
	if err != nil {
		return nil, fmt.Errorf("read cgroup file: %w", err)
	}
	v1Path, haveV1 := v1["memory"]
	haveV2 := v2Path != ""
	var v2Dir string
	for _, m := range mounts {
		switch {
		case haveV1 && m.FSType == "cgroup" && hasOption(m.VFSOptions, "memory"):
			if dir, ok := under(m.Mountpoint, m.Root, v1Path); ok {
				return v1Memory(dir), nil
			}
		case haveV2 && m.FSType == "cgroup2" && v2Dir == "":
			if dir, ok := under(m.Mountpoint, m.Root, v2Path); ok {
				v2Dir = dir
			}
		}
	}
	if v2Dir == "" {
		return nil, nil
	}
	return v2Memory(v2Dir), nil
}

// under returns where cgroup cg is found in a cgroup mount of root at
// mountpoint: false if the mount does not hold it.
func under(mountpoint, root, cg string) (string, bool) {
	rel, ok := strings.CutPrefix(cg, root)
	if !ok || (rel != "" && root != "/" && !strings.HasPrefix(rel, "/")) {
		return "", false
	}
	return path.Join(mountpoint, rel), true
}

// hasOption reports whether a comma-separated list holds opt.
func hasOption(list, opt string) bool {
	for o := range strings.SplitSeq(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}
