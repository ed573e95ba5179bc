//go:build bench

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pullResult is what the pull part measured: the first start of a freshly
// pulled image's container, per kind.
type pullResult struct {
	moduleSize int64
	// start: CreateContainer + StartContainer of the first container of
	// a freshly pulled image, in a running pod.
	start map[string][]time.Duration
	// compiled: from the end of the pull until the agent had the module
	// compiled.
	compiled []time.Duration
}

// pullOrder are the kinds of the pull part, in the report's order.
var pullOrder = []struct{ key, title string }{
	{"native", "native server (runc), its image just pulled"},
	{"cold", "Wasm server without the agent (the first Create compiles)"},
	{"agent", "Wasm server with the agent (compiled after the pull, before the first Create)"},
	{"artifact", "Wasm server as an OCI Wasm artifact, with the agent (the module read from containerd's content store)"},
}

// pulls measures compile at pull (the node agent): the example HTTP server
// (a 9.8 MB Go module) and its native build, each round pushed as a new
// image (a module of a digest of its own) to a registry the benchmark
// serves, pulled through CRI, and started once in a running pod on the
// handler wasm. Each round runs the kinds in turn: the native build; the
// Wasm build with the agent stopped (SIGSTOP; the first Create compiles);
// the Wasm build with the agent running, started once the agent has
// compiled it; the same as an OCI Wasm artifact.
func (b *bench) pulls(t *testing.T) {
	rounds := envInt("BENCH_PULL_ROUNDS", 5)
	host := startRegistry(t)
	c := startCRI(t)
	agent, _ := startAgent(t, c)
	server, err := os.ReadFile(filepath.Join(e.fixtures, "http-server.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	nativeServer := filepath.Join(b.dir, "fixtures", "http-server")
	if _, err := os.Stat(nativeServer); err != nil {
		if err := goBuild(nativeServer, "./examples/http-server", "CGO_ENABLED=0", "GOOS=linux"); err != nil {
			t.Fatal(err)
		}
	}
	b.pull = pullResult{moduleSize: int64(len(server)), start: map[string][]time.Duration{}}
	podID, podCfg := c.pod(t, "pull-bench", "wasm")
	stamp := time.Now().UnixNano()
	for round := range rounds {
		for _, kind := range pullOrder {
			ref := fmt.Sprintf("%s/bench/%s:%d-%d", host, kind.key, stamp, round)
			var env []*cri.KeyValue
			var cmd []string
			switch kind.key {
			case "native":
				// A file of its own makes a new image each round.
				wasmImage(t, "-push", "-insecure", "-name", ref, "-file", nativeServer+":/http-server",
					"-file", writeTemp(t, []byte(ref))+":/round", "-entrypoint", "/http-server", "0.0.0.0:8080")
			default:
				mod := writeTemp(t, withCustomSection(server, ref))
				format := "rootfs"
				if kind.key == "artifact" {
					format = "artifact"
				}
				wasmImage(t, "-push", "-insecure", "-name", ref, "-format", format, "-wasm", mod)
				env = []*cri.KeyValue{{Key: "WASM_LISTEN", Value: []byte("0.0.0.0:8080")}}
			}
			if kind.key == "cold" {
				agent.Process.Signal(syscall.SIGSTOP)
			}
			c.pull(t, ref)
			pulled := time.Now()
			if kind.key == "agent" || kind.key == "artifact" {
				if !waitCached(t, withCustomSection(server, ref), 2*time.Minute) {
					t.Fatalf("round %d: the agent did not compile %s", round, ref)
				}
				if kind.key == "agent" {
					b.pull.compiled = append(b.pull.compiled, time.Since(pulled))
				}
			}
			d := c.timedStart(t, podID, podCfg, fmt.Sprintf("%s-%d", kind.key, round), ref, cmd, env)
			b.pull.start[kind.key] = append(b.pull.start[kind.key], d)
			if kind.key == "cold" {
				agent.Process.Signal(syscall.SIGCONT)
			}
		}
	}
}

// timedStart creates and starts a container of image in a pod, returns
// how long CreateContainer and StartContainer took together, and removes
// the container.
func (c *criEnv) timedStart(t *testing.T, podID string, podCfg *cri.PodSandboxConfig, name, image string, cmd []string, env []*cri.KeyValue) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: image}, Envs: env, LogPath: name + ".log"}
	if len(cmd) > 0 {
		cfg.Command = cmd
	}
	start := time.Now()
	resp, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: podCfg})
	if err != nil {
		t.Fatalf("CreateContainer(%s): %v", name, err)
	}
	if _, err := c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		t.Fatalf("StartContainer(%s): %v", name, err)
	}
	d := time.Since(start)
	c.rt.StopContainer(ctx, &cri.StopContainerRequest{ContainerId: resp.ContainerId, Timeout: 0})
	c.rt.RemoveContainer(ctx, &cri.RemoveContainerRequest{ContainerId: resp.ContainerId})
	return d
}

// pullReport is the pull part of the report.
func (b *bench) pullReport(add func(string, ...any)) {
	if len(b.pull.start["agent"]) == 0 {
		return
	}
	nat := median(b.pull.start["native"])
	add("### First start after a pull: compile at pull (the node agent)")
	add("")
	add("The example HTTP server (`examples/http-server`, a %.1f MB Go module) and its native build, each round pushed as a new image (a module of its own digest) to a registry served by the benchmark, pulled through CRI (containerd %s) and started once in a running pod of the handler `wasm`: CreateContainer + StartContainer, medians of %d rounds, the kinds taking turns.", float64(b.pull.moduleSize)/1e6, e.release.text, len(b.pull.start["native"]))
	add("")
	add("| First container of a just-pulled image | median | vs native |")
	add("| --- | ---: | ---: |")
	for _, k := range pullOrder {
		m := median(b.pull.start[k.key])
		add("| %s | %s | %.2fx |", k.title, ms(m), float64(m)/float64(nat))
	}
	add("")
	add("With the agent, the module was compiled %s (median) after the pull returned; a container created sooner waits for that compile (the entry's lock) rather than compiling again.", ms(median(b.pull.compiled)))
	add("")
}
