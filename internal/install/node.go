package install

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// NodeLabel is the label the installer puts on its node once the handler
// is served, and takes off before uninstalling: the RuntimeClass's
// scheduling.nodeSelector.
const (
	NodeLabel      = "containerd-shim-wasm.io/handler"
	NodeLabelValue = Handler
)

// WaitHandler waits until the CRI at socket (containerd's) reports the
// runtime handler, polling every second, until ctx ends. It reports the
// handlers it saw if it gives up.
func WaitHandler(ctx context.Context, socket, handler string) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to containerd's CRI at %s: %w", socket, err)
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	var seen []string
	var last error
	for {
		seen, last = handlers(ctx, rt)
		if slices.Contains(seen, handler) {
			return nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("containerd's CRI at %s: %v: %w", socket, last, ctx.Err())
			}
			return fmt.Errorf("containerd's CRI at %s serves the runtime handlers %v, not %q (was containerd restarted?): %w", socket, seen, handler, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// handlers lists the runtime handlers a CRI serves: those its status
// names (CRI 1.30 and newer), or those of its config (the verbose info).
func handlers(ctx context.Context, rt cri.RuntimeServiceClient) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := rt.Status(ctx, &cri.StatusRequest{Verbose: true})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range st.GetRuntimeHandlers() {
		if h.GetName() != "" {
			out = append(out, h.GetName())
		}
	}
	var config struct {
		Containerd struct {
			Runtimes map[string]json.RawMessage `json:"runtimes"`
		} `json:"containerd"`
	}
	if json.Unmarshal([]byte(st.GetInfo()["config"]), &config) == nil {
		for name := range config.Containerd.Runtimes {
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// APIServer is how the installer reaches the Kubernetes API server: as its
// pod's service account.
type APIServer struct {
	// URL is the API server's, such as https://10.96.0.1:443.
	URL string
	// Token is the service account's bearer token.
	Token string
	// Client trusts the cluster's CA.
	Client *http.Client
}

// InCluster is the API server as a pod sees it: KUBERNETES_SERVICE_HOST
// and _PORT, and the service account's token and CA in saDir.
func InCluster(saDir string) (*APIServer, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	token, err := os.ReadFile(filepath.Join(saDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("the service account's token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("the cluster's CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("the cluster's CA %s holds no certificate", filepath.Join(saDir, "ca.crt"))
	}
	return &APIServer{
		URL:   "https://" + net.JoinHostPort(host, port),
		Token: strings.TrimSpace(string(token)),
		Client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
	}, nil
}

// Label puts NodeLabel on node (set) or takes it off, with a JSON merge
// patch of the node's labels.
func (a *APIServer) Label(ctx context.Context, node string, set bool) error {
	var value any // null: the label goes
	if set {
		value = NodeLabelValue
	}
	body, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{NodeLabel: value}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, a.URL+"/api/v1/nodes/"+url.PathEscape(node), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.Client.Do(req)
	if err != nil {
		return fmt.Errorf("label node %s: %w", node, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var status struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(msg, &status) == nil && status.Message != "" {
			msg = []byte(status.Message)
		}
		return fmt.Errorf("label node %s: the API server answered %s: %s", node, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
