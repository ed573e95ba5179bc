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

// logFields remembers what the shim's log lines name a container by,
// beyond its id: its pod sandbox.
type logFields struct {
	mu        sync.Mutex
	sandboxes map[string]string // container id → sandbox id
}

func (l *logFields) created(id string, spec *specs.Spec) {
	if sb := spec.Annotations[sandboxAnnotation]; sb != "" {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.sandboxes[id] = sb
	}
}

func (l *logFields) deleted(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.sandboxes, id)
}

// logCtx returns ctx with a logger whose lines carry the namespace, the
// container id, its pod sandbox's id (if any) and the exec id (if any).
func (s *service) logCtx(ctx context.Context, id, execID string) context.Context {
	fields := log.Fields{"id": id}
	if ns, ok := namespaces.Namespace(ctx); ok {
		fields["namespace"] = ns
	}
	s.logs.mu.Lock()
	if sb := s.logs.sandboxes[id]; sb != "" {
		fields["sandbox"] = sb
	}
	s.logs.mu.Unlock()
	if execID != "" {
		fields["exec"] = execID
	}
	return log.WithLogger(ctx, log.G(ctx).WithFields(fields))
}
