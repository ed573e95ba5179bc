package runner

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ListenEnv is the environment variable through which a pod author declares
// a Wasm container's TCP listeners, e.g. "WASM_LISTEN=:8080,127.0.0.1:9090".
// The shim takes it out of the guest's environment; the runner opens the
// listeners in the container's network namespace and hands them to the
// guest as pre-opened sockets (see ListenFDsStart).
const ListenEnv = "WASM_LISTEN"

// ListenFDsStart is the guest descriptor of the first listener: wazero
// numbers pre-opened sockets after pre-opened directories, and the root "/"
// is descriptor 3. The guest finds LISTEN_FDS (how many), LISTEN_FDS_START
// (this number) and LISTEN_FDNAMES (host:port of each, colon-separated as
// systemd's are) in its environment.
const ListenFDsStart = 4

// Listener is a TCP address the runner listens on for the guest.
type Listener struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

func (l Listener) String() string { return net.JoinHostPort(l.Host, strconv.Itoa(l.Port)) }

// ParseListen parses ListenEnv's value: comma-separated "[host]:port"
// addresses; an empty host means every address (0.0.0.0).
func ParseListen(s string) ([]Listener, error) {
	var out []Listener
	for _, addr := range strings.Split(s, ",") {
		addr = strings.TrimSpace(addr)
		if addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not [host]:port: %w", ListenEnv, addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: %q: port must be 1-65535", ListenEnv, addr)
		}
		if host == "" {
			host = "0.0.0.0"
		} else if net.ParseIP(host) == nil {
			return nil, fmt.Errorf("%s: %q: host must be an IP address", ListenEnv, addr)
		}
		out = append(out, Listener{Host: host, Port: p})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is set but names no address", ListenEnv)
	}
	return out, nil
}

// listenEnv is what the guest learns of its listeners.
func listenEnv(ls []Listener) []string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.String()
	}
	return []string{
		"LISTEN_FDS=" + strconv.Itoa(len(ls)),
		"LISTEN_FDS_START=" + strconv.Itoa(ListenFDsStart),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
	}
}
