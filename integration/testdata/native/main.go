// Command native is a static native program run through the Wasm runtime
// by the integration tests: it greets, with "cat" prints files, with
// "sleep" says so and sleeps until killed.
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		fmt.Println("sleeping")
		for {
			time.Sleep(time.Hour)
		}
	}
	if len(os.Args) > 1 && os.Args[1] == "cat" {
		for _, p := range os.Args[2:] {
			b, err := os.ReadFile(p)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Stdout.Write(b)
		}
		return
	}
	fmt.Printf("native hello, args %q\n", os.Args[1:])
}
