// Command http-server is the example Wasm server (GOOS=wasip1): it serves
// HTTP on the first listener the runner pre-opened for it. Declare the
// listener in the container's environment, e.g. WASM_LISTEN=:8080; the
// runner tells the guest where it is with LISTEN_FDS and LISTEN_FDS_START.
//
// Built for Linux, it listens on the address given as its argument
// instead: the same server, native, for comparison (make bench does).
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
)

func main() {
	l, err := listener()
	if err != nil {
		log.Fatal(err)
	}
	name := os.Getenv("LISTEN_FDNAMES")
	if name == "" {
		name = l.Addr().String()
	}
	fmt.Printf("serving HTTP on %s\n", name)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from wasm, you asked for %s\n", r.URL.Path)
	})
	log.Fatal(http.Serve(l, nil))
}

// listener returns the first pre-opened listener, or one on the address in
// os.Args[1] (a native build).
func listener() (net.Listener, error) {
	if os.Getenv("LISTEN_FDS") == "" {
		if len(os.Args) > 1 {
			return net.Listen("tcp", os.Args[1])
		}
		return nil, fmt.Errorf("no listener: set WASM_LISTEN=:8080 in the container's environment")
	}
	fd, err := strconv.Atoi(os.Getenv("LISTEN_FDS_START"))
	if err != nil {
		return nil, fmt.Errorf("LISTEN_FDS_START: %w", err)
	}
	// Go's wasip1 port needs the descriptor non-blocking before it can
	// serve on it.
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("set non-blocking: %w", err)
	}
	l, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		return nil, fmt.Errorf("listener on fd %d: %w", fd, err)
	}
	return l, nil
}
