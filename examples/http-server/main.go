// Command http-server is the example Wasm server (GOOS=wasip1): it serves
// HTTP on the first listener the runner pre-opened for it. Declare the
// listener in the container's environment, e.g. WASM_LISTEN=:8080; the
// runner tells the guest where it is with LISTEN_FDS and LISTEN_FDS_START.
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
	if os.Getenv("LISTEN_FDS") == "" {
		log.Fatal("no listener: set WASM_LISTEN=:8080 in the container's environment")
	}
	fd, err := strconv.Atoi(os.Getenv("LISTEN_FDS_START"))
	if err != nil {
		log.Fatalf("LISTEN_FDS_START: %v", err)
	}
	// Go's wasip1 port needs the descriptor non-blocking before it can
	// serve on it.
	if err := syscall.SetNonblock(fd, true); err != nil {
		log.Fatalf("set non-blocking: %v", err)
	}
	l, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		log.Fatalf("listener on fd %d: %v", fd, err)
	}
	fmt.Printf("serving HTTP on %s\n", os.Getenv("LISTEN_FDNAMES"))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from wasm, you asked for %s\n", r.URL.Path)
	})
	log.Fatal(http.Serve(l, nil))
}
