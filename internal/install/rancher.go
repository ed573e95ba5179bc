package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// rancherDirs are where k3s and rke2 keep the containerd config they
// generate at every start, from a Go template beside it if there is one:
// the installer edits the template, never the generated config.
var rancherDirs = []string{
	"/var/lib/rancher/k3s/agent/etc/containerd",
	"/var/lib/rancher/rke2/agent/etc/containerd",
}

// templateBase starts a template k3s or rke2 expands to the config they
// would generate without one.
const templateBase = "{{ template \"base\" . }}\n"

// rancher returns the directory of the node's k3s or rke2 containerd
// config, if the node runs either.
func (o *Options) rancher() (string, bool) {
	for _, d := range rancherDirs {
		if _, err := os.Stat(o.host(path.Join(d, "config.toml"))); err == nil {
			return d, true
		}
	}
	return "", false
}

// planTemplate plans the change of a k3s or rke2 node: the handler's
// block appended to the template (config.toml.tmpl for a version 2
// config, config-v3.toml.tmpl for version 3), made from the base template
// if there is none.
func (o *Options) planTemplate(dir string) (*plan, error) {
	generated := path.Join(dir, "config.toml")
	data, err := os.ReadFile(o.host(generated))
	if err != nil {
		return nil, fmt.Errorf("read containerd's config: %w", err)
	}
	mc, err := parseMain(data)
	if err != nil {
		return nil, fmt.Errorf("containerd's config %s: %w", generated, err)
	}
	name := "config.toml.tmpl"
	if mc.Version >= 3 {
		name = "config-v3.toml.tmpl"
	}
	p := &plan{file: path.Join(dir, name)}
	if p.original, err = os.ReadFile(o.host(p.file)); errors.Is(err, fs.ErrNotExist) {
		p.original = nil
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", p.file, err)
	}
	base := p.original
	if base == nil {
		base = []byte(templateBase)
	}
	switch {
	case hasBlock(base):
		p.written = base // installed already
	case mc.HasHandler:
		return nil, fmt.Errorf("containerd's config %s defines the runtime handler %q already: %w", generated, Handler, ErrUnsupported)
	default:
		p.written = appendBlock(base, mc, ShimPath)
	}
	// The handler's tables, as the generated config will hold them.
	if c, err := parseMain(append([]byte(fmt.Sprintf("version = %d\n", mc.Version)), handlerTables(mc, ShimPath)...)); err != nil || !c.HasHandler {
		return nil, fmt.Errorf("the handler for %s went wrong (%v): %w", generated, err, ErrUnsupported)
	}
	return p, nil
}

// RestartUnit is the systemd unit that runs the node's containerd: k3s's
// or rke2's own (server or agent), or "containerd".
func (o *Options) RestartUnit() string {
	dir, ok := o.rancher()
	if !ok {
		return "containerd"
	}
	units := []string{"k3s", "k3s-agent"}
	if strings.Contains(dir, "rke2") {
		units = []string{"rke2-server", "rke2-agent"}
	}
	for _, u := range units {
		for _, d := range []string{"/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system", "/usr/local/lib/systemd/system"} {
			if _, err := os.Stat(o.host(path.Join(d, u+".service"))); err == nil {
				return u
			}
		}
	}
	return units[0]
}
