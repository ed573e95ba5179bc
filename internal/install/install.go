// Package install puts the shim on a node and registers it with the node's
// containerd, and takes both back: the shim's binary under
// /usr/local/bin, and the CRI runtime handler "wasm": in a drop-in file
// with one import of it in containerd's main config (config versions 3 and
// 4, containerd 2.x), or in a marked block at the end of the main config
// (version 2: containerd 1.7 replaces a plugin's whole table with an
// imported file's).
//
// Every path is the node's, under a host root (where the node's "/" is
// mounted: "/" on the node itself, the host mount in a DaemonSet's pod);
// what is written into configs is the path as the node sees it. Install
// computes every change and checks it (both configs must parse and import
// the handler) before it writes anything; a write that fails undoes the
// ones before it. A second install changes no byte, and uninstall restores
// the main config byte for byte if nobody changed it meanwhile.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

const (
	// Installer is the installer binary's name.
	Installer = "containerd-shim-wasm-install"
	// ShimName is the shim binary's name, from which containerd derives
	// RuntimeType.
	ShimName = "containerd-shim-wasm-v1"
	// RuntimeType is the runtime type of the handler.
	RuntimeType = "io.containerd.wasm.v1"
	// Handler is the CRI runtime handler's name, a RuntimeClass's handler.
	Handler = "wasm"

	// ShimPath is where the shim goes on the node.
	ShimPath = "/usr/local/bin/" + ShimName
	// ConfigPath is containerd's main config on the node.
	ConfigPath = "/etc/containerd/config.toml"
	// DropInPath is the installer's drop-in on the node.
	DropInPath = "/etc/containerd/conf.d/containerd-shim-wasm.toml"
	// StatePath records what install changed in the main config, for
	// uninstall.
	StatePath = "/var/lib/containerd-shim-wasm/install.json"
)

// Options say where to install from and to.
type Options struct {
	// HostRoot is where the node's "/" is.
	HostRoot string
	// Binary is the shim binary to install (the running one, for the
	// shim's install command).
	Binary string
	// Out gets a line for each change made.
	Out io.Writer
}

// state is what install changed in the main config: uninstall puts back
// Original if the config still holds Written (nil Original: install
// created the config).
type state struct {
	// File is the node path of the file changed: ConfigPath if empty.
	File     string `json:"file,omitempty"`
	Original []byte `json:"original"`
	Written  []byte `json:"written"`
}

// host is a node path under the host root.
func (o *Options) host(p string) string {
	return filepath.Join(o.HostRoot, filepath.FromSlash(p))
}

func (o *Options) say(format string, a ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, format+"\n", a...)
	}
}

// defaultConfig is the main config install writes where the node has
// none (containerd then runs on its defaults): version 2, which
// containerd 1.7 reads and 2.x migrates.
const defaultConfig = "# Written by " + Installer + " install: containerd had no config (it ran\n# on its defaults). `" + Installer + " uninstall` removes it.\nversion = 2\n"

// plan is what Install changes: file (a node path: containerd's main
// config, or the template k3s and rke2 generate it from) from original
// (nil: it does not exist) to written, and the drop-in (nil: none).
type plan struct {
	file              string
	original, written []byte
	drop              []byte
}

// Install copies the shim and registers the handler, and reports whether
// it changed anything.
func Install(o Options) (changed bool, err error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return false, fmt.Errorf("read the shim's binary: %w", err)
	}
	var p *plan
	if dir, ok := o.rancher(); ok {
		p, err = o.planTemplate(dir)
	} else {
		p, err = o.planConfig()
	}
	if err != nil {
		return false, err
	}
	var w writer
	if err := w.write(o.host(ShimPath), bin, 0o755); err != nil {
		return false, w.undo(fmt.Errorf("install the shim: %w", err))
	}
	if p.drop != nil {
		if err := w.write(o.host(DropInPath), p.drop, 0o644); err != nil {
			return false, w.undo(fmt.Errorf("write the drop-in: %w", err))
		}
	}
	if p.original == nil || !bytes.Equal(p.written, p.original) {
		st, _ := json.Marshal(state{File: p.file, Original: p.original, Written: p.written})
		if err := w.write(o.host(StatePath), st, 0o600); err != nil {
			return false, w.undo(fmt.Errorf("record the install: %w", err))
		}
		if err := w.write(o.host(p.file), p.written, configMode(o.host(p.file))); err != nil {
			return false, w.undo(fmt.Errorf("register the handler in %s: %w", p.file, err))
		}
	}
	for _, p := range w.changed {
		o.say("wrote %s", strings.TrimPrefix(p, filepath.Clean(o.HostRoot)))
	}
	return len(w.changed) > 0, nil
}

// Uninstall removes what Install added: the import (the main config put
// back as it was, if it still is as Install left it), the drop-in and the
// shim, and reports whether it changed anything.
func Uninstall(o Options) (changed bool, err error) {
	done := func(format string, a ...any) {
		changed = true
		o.say(format, a...)
	}
	var st state
	data, err := os.ReadFile(o.host(StatePath))
	if err == nil {
		if err := json.Unmarshal(data, &st); err != nil {
			return false, fmt.Errorf("read the install record %s: %w", StatePath, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read the install record: %w", err)
	}
	file := st.File
	if file == "" {
		file = ConfigPath
		if dir, ok := o.rancher(); ok && st.Written == nil {
			file = path.Join(dir, "config-v3.toml.tmpl")
			if _, err := os.Stat(o.host(file)); err != nil {
				file = path.Join(dir, "config.toml.tmpl")
			}
		}
	}
	current, err := os.ReadFile(o.host(file))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return false, fmt.Errorf("read %s: %w", file, err)
	case st.Written != nil && bytes.Equal(current, st.Written) && st.Original == nil:
		if err := os.Remove(o.host(file)); err != nil {
			return false, fmt.Errorf("remove %s: %w", file, err)
		}
		done("removed %s (install had created it)", file)
	case st.Written != nil && bytes.Equal(current, st.Written):
		if err := writeFile(o.host(file), st.Original, configMode(o.host(file))); err != nil {
			return false, fmt.Errorf("restore %s: %w", file, err)
		}
		done("restored %s", file)
	default:
		if out := removeImport(removeBlock(current), DropInPath); !bytes.Equal(out, current) {
			if err := writeFile(o.host(file), out, configMode(o.host(file))); err != nil {
				return false, fmt.Errorf("take the handler out of %s: %w", file, err)
			}
			done("took the handler out of %s (changed since install: not restored whole)", file)
		}
	}
	for _, p := range []string{DropInPath, ShimPath, StatePath} {
		if err := os.Remove(o.host(p)); err == nil {
			done("removed %s", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return changed, nil
}

// planConfig plans the change of containerd's main config: a drop-in and
// its import (version 3, 4), or a block (version 2, or no config).
func (o *Options) planConfig() (*plan, error) {
	original, err := os.ReadFile(o.host(ConfigPath))
	if errors.Is(err, fs.ErrNotExist) {
		original, err = nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read containerd's config: %w", err)
	}
	main := original
	if original == nil {
		main = []byte(defaultConfig)
	}
	mc, err := parseMain(main)
	if err != nil {
		return nil, fmt.Errorf("containerd's config %s: %w", ConfigPath, err)
	}
	p := &plan{file: ConfigPath, original: original, written: main}
	switch {
	case mc.Version == 2 && hasBlock(main):
		// installed already
	case mc.HasHandler:
		return nil, fmt.Errorf("containerd's config %s defines the runtime handler %q already: remove it, or leave it as it is: %w", ConfigPath, Handler, ErrUnsupported)
	case mc.Version == 2:
		p.written = appendBlock(main, mc, ShimPath)
	default:
		p.drop = dropIn(mc, ShimPath)
		if !imported(mc.Imports, path.Dir(ConfigPath), DropInPath) {
			if p.written, err = addImport(main, DropInPath); err != nil {
				return nil, fmt.Errorf("containerd's config %s: %w", ConfigPath, err)
			}
		}
	}
	if after, err := parseMain(p.written); err != nil || !(after.HasHandler || imported(after.Imports, path.Dir(ConfigPath), DropInPath)) {
		return nil, fmt.Errorf("containerd's config %s: registering the handler went wrong (%v): %w", ConfigPath, err, ErrUnsupported)
	}
	return p, nil
}

// configMode is the mode of containerd's config, 0644 if it has none yet.
func configMode(p string) fs.FileMode {
	if fi, err := os.Stat(p); err == nil {
		return fi.Mode().Perm()
	}
	return 0o644
}

// writer writes files, each only if its contents change, and can undo
// what it wrote.
type writer struct {
	changed []string
	undos   []func()
}

func (w *writer) write(p string, data []byte, mode fs.FileMode) error {
	old, err := os.ReadFile(p)
	if err == nil && bytes.Equal(old, data) {
		return nil
	}
	existed := err == nil
	if err := writeFile(p, data, mode); err != nil {
		return err
	}
	w.changed = append(w.changed, p)
	w.undos = append(w.undos, func() {
		if existed {
			writeFile(p, old, mode)
		} else {
			os.Remove(p)
		}
	})
	return nil
}

// undo undoes every write, last first, and returns err.
func (w *writer) undo(err error) error {
	for i := len(w.undos) - 1; i >= 0; i-- {
		w.undos[i]()
	}
	return err
}

// writeFile replaces p with data atomically: a file is written beside it
// and renamed over it, so that a reader (containerd, or exec of a running
// shim's binary) sees the old file or the new one, never a part.
func writeFile(p string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
