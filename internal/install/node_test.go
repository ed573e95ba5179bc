package install

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// apiServer is a local HTTPS server standing in for the API server: it
// records the node patches it gets, and answers 403 to a wrong token.
type apiServer struct {
	*httptest.Server
	mu      sync.Mutex
	patches []string // "NODE BODY"
}

func newAPIServer(t *testing.T) (*apiServer, string) {
	t.Helper()
	a := &apiServer{}
	a.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer the-token" {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"kind":"Status","message":"nodes \"n1\" is forbidden: User \"system:anonymous\" cannot patch resource \"nodes\""}`)
			return
		}
		node, ok := strings.CutPrefix(r.URL.Path, "/api/v1/nodes/")
		if r.Method != http.MethodPatch || !ok || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.patches = append(a.patches, node+" "+string(body))
		a.mu.Unlock()
		io.WriteString(w, `{"kind":"Node"}`)
	}))
	t.Cleanup(a.Close)
	// The service account's directory, as a pod has it.
	sa := t.TempDir()
	os.WriteFile(filepath.Join(sa, "token"), []byte("the-token\n"), 0o600)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Certificate().Raw})
	os.WriteFile(filepath.Join(sa, "ca.crt"), ca, 0o644)
	host, port, _ := net.SplitHostPort(a.Listener.Addr().String())
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)
	return a, sa
}

// TestLabel: the node's label is set and taken off by JSON merge patches
// with the service account's token, over TLS checked against the
// cluster's CA; the API server's refusal is reported with its message.
func TestLabel(t *testing.T) {
	a, sa := newAPIServer(t)
	api, err := InCluster(sa)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []bool{true, false} {
		if err := api.Label(context.Background(), "n1", set); err != nil {
			t.Fatal(err)
		}
	}
	want := []map[string]any{
		{"metadata": map[string]any{"labels": map[string]any{NodeLabel: NodeLabelValue}}},
		{"metadata": map[string]any{"labels": map[string]any{NodeLabel: nil}}},
	}
	if len(a.patches) != 2 {
		t.Fatalf("patches %q", a.patches)
	}
	for i, p := range a.patches {
		node, body, _ := strings.Cut(p, " ")
		var got map[string]any
		json.Unmarshal([]byte(body), &got)
		if node != "n1" || !jsonEqual(got, want[i]) {
			t.Errorf("patch %d: %s %s, want %v", i, node, body, want[i])
		}
	}
	api.Token = "wrong"
	if err := api.Label(context.Background(), "n1", true); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "cannot patch") {
		t.Errorf("a refused patch: %v", err)
	}
	// Another CA: the server is not trusted.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "token"), []byte("the-token"), 0o600)
	os.WriteFile(filepath.Join(other, "ca.crt"), []byte("not a certificate"), 0o644)
	if _, err := InCluster(other); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestMainLabels: install --label-node labels the node after installing,
// uninstall --label-node takes the label off first; outside a pod,
// --label-node fails before anything is installed.
func TestMainLabels(t *testing.T) {
	a, sa := newAPIServer(t)
	o, root := node(t, "version = 3\n")
	var out, errs strings.Builder
	args := []string{"--host-root", root, "--shim", o.Binary, "--label-node", "n1", "--service-account-dir", sa}
	if code := Main(append([]string{"install"}, args...), &out, &errs); code != 0 {
		t.Fatalf("install: %d: %s", code, errs.String())
	}
	if code := Main(append([]string{"uninstall"}, args...), &out, &errs); code != 0 {
		t.Fatalf("uninstall: %d: %s", code, errs.String())
	}
	if len(a.patches) != 2 || !strings.Contains(a.patches[0], `"`+NodeLabelValue+`"`) || !strings.Contains(a.patches[1], "null") {
		t.Errorf("patches %q", a.patches)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	before := tree(t, root)
	if code := Main(append([]string{"install"}, args...), &out, &errs); code == 0 || !strings.Contains(errs.String(), "not in a pod") {
		t.Errorf("install --label-node outside a pod: %d: %s", code, errs.String())
	}
	if !equal(tree(t, root), before) {
		t.Error("a refused install changed the node")
	}
}
