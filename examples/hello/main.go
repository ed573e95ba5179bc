// Command hello is the example Wasm workload: built with
// GOOS=wasip1 GOARCH=wasm, it greets its arguments and shows what a guest
// sees of its container.
package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
)

func main() {
	who := "world"
	if len(os.Args) > 1 {
		who = strings.Join(os.Args[1:], " ")
	}
	fmt.Printf("Hello, %s! (from %s/%s, running in wazero under containerd)\n", who, runtime.GOOS, runtime.GOARCH)
	if b, err := os.ReadFile("/etc/greeting.txt"); err == nil {
		fmt.Printf("/etc/greeting.txt says: %s", b)
	}
	wd, _ := os.Getwd()
	fmt.Printf("working directory: %s\n", wd)
}
