package install

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

// tree is every file under root, by path from root, with its contents.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			out[rel] = string(data)
		}
		return nil
	})
	return out
}

// node makes a host root holding config (none if "") and a shim binary
// to install, outside it.
func node(t *testing.T, config string) (Options, string) {
	t.Helper()
	root := t.TempDir()
	if config != "" {
		p := filepath.Join(root, "etc", "containerd", "config.toml")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(t.TempDir(), ShimName)
	if err := os.WriteFile(bin, []byte("\x7fELF the shim"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Options{HostRoot: root, Binary: bin}, root
}

func TestInstallUninstall(t *testing.T) {
	tests := []struct {
		name, config string
		// wantMain is the main config after install: "" unchanged,
		// "+block" the config (or the default one) with the handler's
		// block appended.
		wantMain string
		// plugin and systemd are what the handler must say.
		plugin  string
		systemd bool
	}{
		{"no config", "", "+block", "io.containerd.grpc.v1.cri", false},
		{"version 3, no imports", "version = 3\nroot = \"/var/lib/containerd\"\n\n[plugins]\n",
			"version = 3\nimports = [\"/etc/containerd/conf.d/containerd-shim-wasm.toml\"]\nroot = \"/var/lib/containerd\"\n\n[plugins]\n", "io.containerd.cri.v1.runtime", false},
		{"version 4, conf.d imported", "version = 4\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n", "", "io.containerd.cri.v1.runtime", false},
		{"version 4, relative glob", "version = 4\nimports = [\"conf.d/*.toml\"]\n", "", "io.containerd.cri.v1.runtime", false},
		{"version 4, systemd", "version = 4\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n",
			"version = 4\nimports = [\"/etc/containerd/conf.d/containerd-shim-wasm.toml\"]\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n", "io.containerd.cri.v1.runtime", true},
		{"version 2, other imports, systemd", "version = 2 # comment\nimports = [\"/etc/other.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n  BinaryName = \"/usr/sbin/runc\"",
			"+block", "io.containerd.grpc.v1.cri", true},
		{"version 3, empty imports", "version = 3\nimports = []\n", "version = 3\nimports = [\"/etc/containerd/conf.d/containerd-shim-wasm.toml\"]\n", "io.containerd.cri.v1.runtime", false},
		{"version 3, multi-line imports", "version = 3\nimports = [\n  \"/a.toml\",\n  \"/b.toml\",\n]\n", "version = 3\nimports = [\n  \"/a.toml\",\n  \"/b.toml\", \"/etc/containerd/conf.d/containerd-shim-wasm.toml\"\n]\n", "io.containerd.cri.v1.runtime", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, root := node(t, tt.config)
			before := tree(t, root)
			if changed, err := Install(o); err != nil || !changed {
				t.Fatalf("Install: changed %v, %v", changed, err)
			}
			after := tree(t, root)
			got := after["etc/containerd/config.toml"]
			switch {
			case tt.wantMain == "+block":
				base := tt.config
				if base == "" {
					base = defaultConfig
				}
				rest := string(removeBlock([]byte(got))) // base, with a final newline
				if !hasBlock([]byte(got)) || rest != base && rest != base+"\n" {
					t.Errorf("main config:\n%s\nwant the handler's block after:\n%s", got, base)
				}
			case tt.wantMain == "" && got != tt.config, tt.wantMain != "" && got != tt.wantMain:
				t.Errorf("main config:\n%s\nwant:\n%s", got, tt.wantMain)
			}
			if after["usr/local/bin/"+ShimName] != "\x7fELF the shim" {
				t.Error("shim not installed")
			}
			// The handler, in the drop-in or the main config.
			file := after["etc/containerd/conf.d/containerd-shim-wasm.toml"]
			if tt.wantMain == "+block" {
				file = got
			}
			var conf map[string]any
			if err := toml.Unmarshal([]byte(file), &conf); err != nil {
				t.Fatalf("config with the handler: %v", err)
			}
			rt, _ := lookup(conf, "plugins", tt.plugin, "containerd", "runtimes", Handler).(map[string]any)
			if rt["runtime_type"] != RuntimeType || rt["runtime_path"] != ShimPath {
				t.Errorf("handler %v", rt)
			}
			if opts, _ := rt["options"].(map[string]any); opts["SystemdCgroup"] != tt.systemd {
				t.Errorf("handler's runc options %v, want SystemdCgroup %v", opts, tt.systemd)
			}
			// Again: not a byte changes.
			if changed, err := Install(o); err != nil || changed {
				t.Fatalf("Install: changed %v, %v", changed, err)
			}
			if again := tree(t, root); !equal(again, after) {
				t.Errorf("a second install changed the node:\n%v\nwas:\n%v", again, after)
			}
			if changed, err := Uninstall(o); err != nil || !changed {
				t.Fatalf("Uninstall: changed %v, %v", changed, err)
			}
			if restored := tree(t, root); !equal(restored, before) {
				t.Errorf("after uninstall:\n%v\nwant:\n%v", restored, before)
			}
		})
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestInstallRefuses: a config the installer cannot read or edit, or a
// target it cannot write, fails install with the reason, and changes
// nothing.
func TestInstallRefuses(t *testing.T) {
	tests := []struct {
		name, config string
		breakNode    func(root string)
		want         string
	}{
		{"unparseable", "version = 3\n[plugins\n", nil, "parse"},
		{"version 1", "[plugins.cri]\n", nil, "version 1"},
		{"version 5", "version = 5\n", nil, "version 5"},
		{"imports not a list", "version = 3\nimports = \"/x.toml\"\n", nil, "not a list"},
		{"comments in imports", "version = 3\nimports = [\n  \"/a.toml\", # the a\n]\n", nil, "comments"},
		{"handler there already", "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasm]\n  runtime_type = \"io.containerd.wasm.v1\"\n", nil, "already"},
		{"shim directory unwritable", "version = 3\n", func(root string) {
			os.MkdirAll(filepath.Join(root, "usr", "local"), 0o755)
			os.WriteFile(filepath.Join(root, "usr", "local", "bin"), nil, 0o644) // a file where the directory goes
		}, "install the shim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, root := node(t, tt.config)
			if tt.breakNode != nil {
				tt.breakNode(root)
			}
			before := tree(t, root)
			_, err := Install(o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Install: %v, want an error saying %q", err, tt.want)
			}
			if after := tree(t, root); !equal(after, before) {
				t.Errorf("a refused install changed the node:\n%v\nwas:\n%v", after, before)
			}
			if tt.breakNode == nil && !errors.Is(err, ErrUnsupported) {
				t.Errorf("%v is not ErrUnsupported", err)
			}
		})
	}
}

// TestInstallUndoesWrites: a write that fails after others (the main
// config, last) undoes them: the shim and the drop-in are gone again.
func TestInstallUndoesWrites(t *testing.T) {
	o, root := node(t, "version = 3\n")
	// The install record, written after the shim and the drop-in, cannot
	// be: a file where its directory goes.
	os.MkdirAll(filepath.Join(root, "var", "lib"), 0o755)
	os.WriteFile(filepath.Join(root, "var", "lib", "containerd-shim-wasm"), nil, 0o644)
	before := tree(t, root)
	if _, err := Install(o); err == nil || !strings.Contains(err.Error(), "record") {
		t.Fatalf("Install: %v", err)
	}
	if after := tree(t, root); !equal(after, before) {
		t.Errorf("a failed install left:\n%v\nwas:\n%v", after, before)
	}
}

// TestUninstallAfterChange: a main config changed since install keeps the
// change; only the import is taken out.
func TestUninstallAfterChange(t *testing.T) {
	for _, config := range []string{"version = 3\n", "version = 3\nimports = [\"/a.toml\"]\n", "version = 2\n"} {
		o, root := node(t, config)
		if _, err := Install(o); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, "etc", "containerd", "config.toml")
		installed, _ := os.ReadFile(p)
		os.WriteFile(p, append(installed, "\n[debug]\n  level = \"debug\"\n"...), 0o600)
		if _, err := Uninstall(o); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(p)
		if want := config + "\n[debug]\n  level = \"debug\"\n"; !bytes.Equal(got, []byte(want)) {
			t.Errorf("after uninstall:\n%s\nwant:\n%s", got, want)
		}
	}
}

// TestInstallRancher: on a k3s or rke2 node the handler goes into the
// template the distribution generates containerd's config from (made from
// the base template if there is none), never into the generated config;
// uninstall takes it back; the unit restarted is the distribution's.
func TestInstallRancher(t *testing.T) {
	tests := []struct {
		name, dir, generated, template, wantFile, unitFile, wantUnit string
	}{
		{"k3s, containerd 1.7", "var/lib/rancher/k3s/agent/etc/containerd", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n", "",
			"config.toml.tmpl", "etc/systemd/system/k3s.service", "k3s"},
		{"k3s agent, containerd 2, a template of the admin's", "var/lib/rancher/k3s/agent/etc/containerd", "version = 3\n", "{{ template \"base\" . }}\n[debug]\n  level = \"debug\"\n",
			"config-v3.toml.tmpl", "etc/systemd/system/k3s-agent.service", "k3s-agent"},
		{"rke2 agent", "var/lib/rancher/rke2/agent/etc/containerd", "version = 3\n", "",
			"config-v3.toml.tmpl", "usr/lib/systemd/system/rke2-agent.service", "rke2-agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, root := node(t, "")
			dir := filepath.Join(root, tt.dir)
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(dir, "config.toml"), []byte(tt.generated), 0o600)
			if tt.template != "" {
				os.WriteFile(filepath.Join(dir, tt.wantFile), []byte(tt.template), 0o600)
			}
			os.MkdirAll(filepath.Join(root, filepath.Dir(tt.unitFile)), 0o755)
			os.WriteFile(filepath.Join(root, tt.unitFile), nil, 0o644)
			before := tree(t, root)
			if _, err := Install(o); err != nil {
				t.Fatal(err)
			}
			after := tree(t, root)
			if after[filepath.Join(tt.dir, "config.toml")] != tt.generated {
				t.Error("the generated config was changed")
			}
			if _, ok := after["etc/containerd/config.toml"]; ok {
				t.Error("a containerd config was written in /etc/containerd")
			}
			tmpl := after[filepath.Join(tt.dir, tt.wantFile)]
			base := tt.template
			if base == "" {
				base = templateBase
			}
			if !strings.HasPrefix(tmpl, base) || !hasBlock([]byte(tmpl)) {
				t.Errorf("template:\n%s", tmpl)
			}
			// Expanded (the base template standing for the generated
			// config), it is a config with the handler.
			expanded := strings.Replace(tmpl, `{{ template "base" . }}`, tt.generated, 1)
			if c, err := parseMain([]byte(expanded)); err != nil || !c.HasHandler {
				t.Errorf("the expanded template: %v, handler %v:\n%s", err, c != nil && c.HasHandler, expanded)
			}
			if strings.Contains(tt.generated, "SystemdCgroup = true") && !strings.Contains(tmpl, "SystemdCgroup = true") {
				t.Error("the handler does not follow the node's systemd cgroup driver")
			}
			if u := o.RestartUnit(); u != tt.wantUnit {
				t.Errorf("unit %q, want %q", u, tt.wantUnit)
			}
			if changed, err := Install(o); err != nil || changed || !equal(tree(t, root), after) {
				t.Errorf("a second install: %v, or it changed the node", err)
			}
			if _, err := Uninstall(o); err != nil {
				t.Fatal(err)
			}
			if got := tree(t, root); !equal(got, before) {
				t.Errorf("after uninstall:\n%v\nwant:\n%v", got, before)
			}
		})
	}
}
