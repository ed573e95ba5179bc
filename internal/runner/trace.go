package runner

import (
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// TracePrefix starts the line a tracing runner writes to stderr.
const TracePrefix = "containerd-shim-wasm trace: "

// Where a runner's compiled code came from (Trace.Code).
const (
	// CodeHit: the shim found it in the node's cache at Create.
	CodeHit = "hit"
	// CodeMiss: the shim compiled it at Create (and cached it).
	CodeMiss = "miss"
	// CodeCompiled: the runner compiled it (no cache entry could be
	// used, or an exec of another module than the container's).
	CodeCompiled = "compiled"
)

// Trace is how long each phase of a runner took, written as one JSON line
// after TracePrefix when Config.Trace is set (for benchmarks and
// debugging; it is the guest's stderr, so it is off by default).
type Trace struct {
	// Started is when the runner's main began.
	Started time.Time `json:"started"`
	// Setup is reading the configuration, closing inherited descriptors
	// and building the file system denylist.
	Setup time.Duration `json:"setup_ns"`
	// Read is reading the module from the container's file system.
	Read time.Duration `json:"read_ns"`
	// Load is loading the compiled code (or compiling, on a miss).
	Load time.Duration `json:"load_ns"`
	// Instantiate is instantiating WASI and the module.
	Instantiate time.Duration `json:"instantiate_ns"`
	// Run is the guest's entry function.
	Run time.Duration `json:"run_ns"`
	// Code is where the compiled code came from: CodeHit, CodeMiss or
	// CodeCompiled.
	Code string `json:"code"`
	// GrownTo is the container's memory in use, as the memory guard
	// counted it, after the guest's last grow it allowed (0: none, or no
	// limit); Refused is how many grows it refused. Against the
	// container's peak usage, GrownTo tells what the runner and the
	// kernel took past the guard's count (see MemoryMargin).
	GrownTo uint64 `json:"grown_to_bytes,omitempty"`
	Refused int    `json:"refused,omitempty"`

	last time.Time
}

// phase returns a function that records, into the field it is given, the
// time since the previous phase ended.
func (t *Trace) phase() func(*time.Duration) {
	t.last = time.Now()
	return func(d *time.Duration) {
		now := time.Now()
		*d = now.Sub(t.last)
		t.last = now
	}
}

func (t *Trace) write(w io.Writer) {
	b, _ := json.Marshal(t)
	fmt.Fprintf(w, "%s%s\n", TracePrefix, b)
}
