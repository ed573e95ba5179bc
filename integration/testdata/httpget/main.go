// Command httpget is a static native client for the CRI tests: it GETs a
// URL, retrying while the server starts, and prints the body.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(os.Args[1])
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Printf("%d %s", resp.StatusCode, b)
			return
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
