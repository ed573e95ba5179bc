// Command fakesystemctl stands in for a node's systemctl in the
// installer's test: it appends its arguments to /systemctl.log (in the
// root it was run in) and succeeds.
package main

import (
	"os"
	"strings"
)

func main() {
	f, err := os.OpenFile("/systemctl.log", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		os.Exit(1)
	}
	f.WriteString(strings.Join(os.Args[1:], " ") + "\n")
	f.Close()
}
