package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"go.yaml.in/yaml/v3"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/install"
)

// TestInstaller: `containerd-shim-wasm-install install` on a node, against a
// containerd config of this release's version (for 2.4 also version 4,
// with other imports present), then containerd started from the result
// runs a pod on the handler "wasm"; a second install changes no byte, and
// uninstall restores the config byte for byte and removes the shim. The
// node's /etc/containerd, /usr/local/bin and /var/lib are a test
// directory's, bind-mounted in a private mount namespace in which
// containerd (and so every shim) runs; the shim is nowhere else on its
// PATH.
func TestInstaller(t *testing.T) {
	type variant struct {
		name   string
		change func(host, config string) string // the node's config
	}
	variants := []variant{{"as the release writes it", func(_, c string) string { return c }}}
	if e.release.atLeast(2, 4) {
		variants = append(variants, variant{"version 4, other imports", func(host, c string) string {
			other := filepath.Join(host, "etc", "containerd", "other.toml")
			os.MkdirAll(filepath.Dir(other), 0o755)
			os.WriteFile(other, []byte("version = 4\n"), 0o644)
			// Version 4 has the servers' addresses in their plugins' tables:
			// [grpc] would be ignored.
			c = strings.Replace(c, "[grpc]\n", "[plugins.\"io.containerd.server.v1.grpc\"]\n", 1)
			c = strings.Replace(c, "[ttrpc]\n", "[plugins.\"io.containerd.server.v1.ttrpc\"]\n", 1)
			return strings.Replace(c, "version = 3\n", "version = 4\nimports = [\"/etc/containerd/other.toml\"]\n", 1)
		}})
	}
	installerBin := filepath.Join(t.TempDir(), "containerd-shim-wasm-install")
	if err := goBuild(installerBin, "./cmd/containerd-shim-wasm-install", "CGO_ENABLED=0"); err != nil {
		t.Fatal(err)
	}
	fakeSystemctl := filepath.Join(t.TempDir(), "systemctl")
	if err := goBuild(fakeSystemctl, "./integration/testdata/fakesystemctl", "CGO_ENABLED=0"); err != nil {
		t.Fatal(err)
	}
	// The mount points: created for the test if the machine lacks them.
	for _, d := range []string{"/etc/containerd", "/usr/local/bin", "/var/lib"} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(d) })
		}
	}
	// The installed handler compiles under the default compile cgroup.
	hadCgroup := len(cgroups.Dirs(cgroups.Root, "/containerd-shim-wasm")) > 0
	t.Cleanup(func() {
		if !hadCgroup {
			for _, d := range cgroups.Dirs(cgroups.Root, "/containerd-shim-wasm") {
				os.Remove(d)
			}
		}
	})
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			host := t.TempDir()
			configFile := filepath.Join(host, "etc", "containerd", "config.toml")
			var original, installed string
			installer := func(args ...string) string {
				t.Helper()
				out, err := exec.Command(installerBin, append(args, "--host-root", host, "--shim", e.shim)...).CombinedOutput()
				if err != nil {
					t.Fatalf("%v: %v: %s", args, err, out)
				}
				return string(out)
			}
			t.Cleanup(func() {
				if t.Failed() {
					data, _ := os.ReadFile(configFile)
					t.Logf("the node's config:\n%s", data)
				}
			})
			c := startCRIWith(t, func(dir, config string) (string, []string) {
				original = v.change(host, config)
				os.MkdirAll(filepath.Dir(configFile), 0o755)
				if err := os.WriteFile(configFile, []byte(original), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Log(installer("install"))
				installed = snapshot(t, host)
				if out := installer("install"); snapshot(t, host) != installed {
					t.Errorf("a second install changed the node: %s", out)
				}
				script := `mount --bind "$H/etc/containerd" /etc/containerd && mount --bind "$H/usr/local/bin" /usr/local/bin && mount --bind "$H/var/lib" /var/lib && exec "$@"`
				os.MkdirAll(filepath.Join(host, "var", "lib"), 0o755)
				return install.ConfigPath, []string{"unshare", "--mount", "--propagation", "private", "env", "H=" + host, "sh", "-c", script, "sh"}
			})
			// containerd serves the handler: install --wait says so (and
			// changes nothing); a handler it does not serve is named in
			// the error, with those it serves.
			if out := installer("install", "--wait", "--containerd-socket", c.address); !strings.Contains(out, "serves the runtime handler") || snapshot(t, host) != installed {
				t.Errorf("install --wait: %s", out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := install.WaitHandler(ctx, c.address, "nope"); err == nil || !strings.Contains(err.Error(), "wasm") || !strings.Contains(err.Error(), "runc") {
				t.Errorf("waiting for a handler containerd does not serve: %v", err)
			}
			// --restart restarts containerd (systemctl in the node's root: a
			// fake one here) only when something changed, then waits.
			systemctl := filepath.Join(host, "usr", "bin", "systemctl")
			os.MkdirAll(filepath.Dir(systemctl), 0o755)
			if data, err := os.ReadFile(fakeSystemctl); err != nil || os.WriteFile(systemctl, data, 0o755) != nil {
				t.Fatal(err)
			}
			installer("install", "--restart", "--containerd-socket", c.address)
			if log, _ := os.ReadFile(filepath.Join(host, "systemctl.log")); len(log) != 0 {
				t.Errorf("containerd restarted with nothing changed: %q", log)
			}
			os.Remove(filepath.Join(host, install.ShimPath))
			if out := installer("install", "--restart", "--containerd-socket", c.address); !strings.Contains(out, "serves the runtime handler") {
				t.Errorf("install --restart: %s", out)
			}
			if log, _ := os.ReadFile(filepath.Join(host, "systemctl.log")); string(log) != "restart containerd\n" {
				t.Errorf("systemctl run as %q, want restart containerd", log)
			}
			os.Remove(filepath.Join(host, "systemctl.log"))
			// The DaemonSet's command (but --label-node, which needs an API
			// server): install --restart --agent. Nothing changed, so
			// nothing restarts; it stays as the node agent, which compiles
			// the module of an image imported into k8s.io into the
			// installed handler's cache.
			agentOut := &lockedBuffer{}
			agent := exec.Command(installerBin, "install", "--restart", "--agent", "--containerd-socket", c.address, "--host-root", host, "--shim", e.shim)
			agent.Stdout, agent.Stderr = agentOut, agentOut
			agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := agent.Start(); err != nil {
				t.Fatal(err)
			}
			probe, err := os.ReadFile(filepath.Join(e.fixtures, "probe.wasm"))
			if err != nil {
				t.Fatal(err)
			}
			module := withCustomSection(probe, "installer "+v.name)
			tarball := filepath.Join(t.TempDir(), "agent.tar")
			wasmImage(t, "-o", tarball, "-name", "example.local/agent-installed:v1", "-wasm", writeTemp(t, module))
			if _, stderr, err := e.ctrAt(c.address, "-n", "k8s.io", "images", "import", tarball); err != nil {
				t.Fatalf("import: %v: %s", err, stderr)
			}
			cacheDir := filepath.Join(host, "var", "lib", "containerd-shim-wasm", "v1")
			deadline := time.Now().Add(time.Minute)
			for !cachedIn(t, cacheDir, writeTemp(t, module)) {
				if time.Now().After(deadline) {
					t.Fatalf("install --agent did not compile the imported module:\n%s", agentOut)
				}
				time.Sleep(100 * time.Millisecond)
			}
			// At the memory limit the DaemonSet declares, with its peak.
			if peak, limit := procStatus(agent.Process.Pid, "VmHWM"), installerMemoryLimit(t); peak == 0 || peak > limit {
				t.Errorf("install --agent peaked at %d bytes of RSS; the DaemonSet's limit is %d", peak, limit)
			} else {
				t.Logf("install --agent: peak RSS %.1f MB, limit %.0f MB", float64(peak)/(1<<20), float64(limit)/(1<<20))
			}
			agent.Process.Signal(syscall.SIGTERM)
			if err := agent.Wait(); err != nil {
				t.Errorf("install --agent ended with %v on SIGTERM:\n%s", err, agentOut)
			}
			if log, _ := os.ReadFile(filepath.Join(host, "systemctl.log")); len(log) != 0 {
				t.Errorf("install --agent restarted containerd with nothing changed: %q", log)
			}
			podID, podCfg := c.pod(t, "installed", install.Handler)
			id := c.container(t, podID, podCfg, "hello", "/probe.wasm", "echo", "installed")
			if st := c.waitExit(t, id); st.ExitCode != 0 {
				t.Fatalf("a Wasm container on the installed handler exited %d: %s", st.ExitCode, st.Message)
			}
			if log, _ := os.ReadFile(filepath.Join(podCfg.LogDirectory, "hello.log")); !strings.Contains(string(log), "[installed]") {
				t.Errorf("the container's log: %q", log)
			}
			// Uninstall changes the node, so --restart restarts containerd.
			t.Log(installer("uninstall", "--restart"))
			if log, _ := os.ReadFile(filepath.Join(host, "systemctl.log")); string(log) != "restart containerd\n" {
				t.Errorf("uninstall --restart ran systemctl as %q, want restart containerd", log)
			}
			os.Remove(systemctl)
			os.Remove(filepath.Join(host, "systemctl.log"))
			if got, _ := os.ReadFile(configFile); string(got) != original {
				t.Errorf("config after uninstall:\n%s\nwant:\n%s", got, original)
			}
			for _, p := range []string{install.ShimPath, install.DropInPath, install.StatePath} {
				if _, err := os.Stat(filepath.Join(host, p)); err == nil {
					t.Errorf("%s left after uninstall", p)
				}
			}
		})
	}
}

// snapshot is every file under dir with its contents, as one string.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			b.WriteString(p + " " + fi.Mode().String() + "\n" + string(data) + "\n")
		}
		return nil
	})
	return b.String()
}

// installerMemoryLimit is the memory limit of the installer's container in
// deploy/kubernetes/installer.yaml.
func installerMemoryLimit(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "kubernetes", "installer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Resources struct {
								Limits map[string]string `yaml:"limits"`
							} `yaml:"resources"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("installer.yaml has no DaemonSet with a memory limit: %v", err)
		}
		if doc.Kind == "DaemonSet" && len(doc.Spec.Template.Spec.Containers) == 1 {
			if m := doc.Spec.Template.Spec.Containers[0].Resources.Limits["memory"]; m != "" {
				return quantity(t, m)
			}
		}
	}
}
