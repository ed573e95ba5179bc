package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Restart restarts the node's containerd: `systemctl restart unit` run
// in the node's root (chrooted into hostRoot unless it is "/"), which
// talks to the node's systemd over its socket. k3s and rke2 run their own
// containerd in the unit k3s, k3s-agent, rke2-server or rke2-agent; their
// config comes from a template the installer does not edit yet.
func Restart(ctx context.Context, hostRoot, unit string) error {
	systemctl := "/usr/bin/systemctl"
	if _, err := os.Stat(filepath.Join(hostRoot, systemctl)); err != nil {
		systemctl = "/bin/systemctl" // a root without the /usr merge
	}
	cmd := exec.CommandContext(ctx, systemctl, "restart", unit)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if filepath.Clean(hostRoot) != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: hostRoot}
		cmd.Dir = "/"
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("restart containerd (systemctl restart %s in %s): %v: %s", unit, hostRoot, err, strings.TrimSpace(out.String()))
	}
	return nil
}
