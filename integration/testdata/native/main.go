// Command native is a static native program run through the Wasm runtime
// by the integration tests.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("native hello, args %q\n", os.Args[1:])
}
