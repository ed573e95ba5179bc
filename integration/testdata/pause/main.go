// Command pause is the pod sandbox's process for the CRI tests: a static
// native program that waits for SIGTERM or SIGINT (no registry is reachable
// to pull Kubernetes' own pause image).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
