package shim

import (
	"context"
	"sync"

	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// sandboxAnnotation is the annotation in which CRI names a container's pod
// sandbox (the sandbox's own id for the sandbox container).
const sandboxAnnotation = "io.kubernetes.cri.sandbox-id"

// containers remembers, of every container of the shim (Wasm or native),
// its bundle and what the shim's log lines name it by beyond its id: its
// pod sandbox.
type containers struct {
	mu      sync.Mutex
	bundles map[string]string // container id → bundle
	sandbox map[string]string // container id → sandbox id
}

func newContainers() *containers {
	return &containers{bundles: map[string]string{}, sandbox: map[string]string{}}
}

func (c *containers) created(id, bundle string, spec *specs.Spec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bundles[id] = bundle
	if sb := spec.Annotations[sandboxAnnotation]; sb != "" {
		c.sandbox[id] = sb
	}
}

func (c *containers) deleted(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.bundles, id)
	delete(c.sandbox, id)
}

// bundle returns container id's bundle, "" if it is not known.
func (c *containers) bundle(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bundles[id]
}

// logCtx returns ctx with a logger whose lines carry the namespace, the
// container id, its pod sandbox's id (if any) and the exec id (if any).
func (s *service) logCtx(ctx context.Context, id, execID string) context.Context {
	fields := log.Fields{"id": id}
	if ns, ok := namespaces.Namespace(ctx); ok {
		fields["namespace"] = ns
	}
	s.containers.mu.Lock()
	if sb := s.containers.sandbox[id]; sb != "" {
		fields["sandbox"] = sb
	}
	s.containers.mu.Unlock()
	if execID != "" {
		fields["exec"] = execID
	}
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields))
}
