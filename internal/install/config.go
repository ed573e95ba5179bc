package install

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// ErrUnsupported is a containerd config the installer cannot read or
// edit, or does not serve.
var ErrUnsupported = errors.New("unsupported containerd config")

// mainConfig is what the installer reads of containerd's main config.
type mainConfig struct {
	// Version is the config's version: 2 (containerd 1.7, read by 2.x
	// too), 3 (2.0-2.3) or 4 (2.4).
	Version int64
	// Imports are the config's imports, as written.
	Imports []string
	// SystemdCgroup, BinaryName and Root are runc's options in the
	// config's "runc" runtime handler, if set: the wasm handler drives
	// runc, and must use the same runc, state and cgroup driver.
	SystemdCgroup    *bool
	BinaryName, Root string
	// HasHandler says the config itself defines the "wasm" handler.
	HasHandler bool
}

// criPlugin is the name of the CRI plugin whose runtimes a config of
// version v configures.
func criPlugin(v int64) string {
	if v == 2 {
		return "io.containerd.grpc.v1.cri"
	}
	return "io.containerd.cri.v1.runtime"
}

// parseMain reads containerd's main config. A config that does not parse,
// or whose version the installer does not serve, is an error.
func parseMain(data []byte) (*mainConfig, error) {
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("parse: %v: %w", err, ErrUnsupported)
	}
	c := &mainConfig{}
	switch v := raw["version"].(type) {
	case int64:
		c.Version = v
	case nil:
		return nil, fmt.Errorf("no version: a version 1 config (containerd 1.6 and older): %w", ErrUnsupported)
	default:
		return nil, fmt.Errorf("version %v is not a number: %w", v, ErrUnsupported)
	}
	if c.Version < 2 || c.Version > 4 {
		return nil, fmt.Errorf("version %d (served: 2 for containerd 1.7, 3 for 2.0-2.3, 4 for 2.4): %w", c.Version, ErrUnsupported)
	}
	switch im := raw["imports"].(type) {
	case nil:
	case []any:
		for _, i := range im {
			s, ok := i.(string)
			if !ok {
				return nil, fmt.Errorf("imports holds %v, not a path: %w", i, ErrUnsupported)
			}
			c.Imports = append(c.Imports, s)
		}
	default:
		return nil, fmt.Errorf("imports is %T, not a list of paths: %w", im, ErrUnsupported)
	}
	c.HasHandler = lookup(raw, "plugins", criPlugin(c.Version), "containerd", "runtimes", Handler) != nil
	opts := lookup(raw, "plugins", criPlugin(c.Version), "containerd", "runtimes", "runc", "options")
	if m, ok := opts.(map[string]any); ok {
		if b, ok := m["SystemdCgroup"].(bool); ok {
			c.SystemdCgroup = &b
		}
		c.BinaryName, _ = m["BinaryName"].(string)
		c.Root, _ = m["Root"].(string)
	}
	return c, nil
}

// lookup returns the value at keys in nested tables, nil if none.
func lookup(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		t, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = t[k]
	}
	return v
}

// imported tells whether the imports of a config in configDir (as the node
// sees it) already pull in file: named, or matched by a glob.
func imported(imports []string, configDir, file string) bool {
	for _, im := range imports {
		if !path.IsAbs(im) {
			im = path.Join(configDir, im)
		}
		if ok, err := path.Match(im, file); err == nil && ok {
			return true
		}
	}
	return false
}

// handlerTables are the tables of the "wasm" runtime handler for a main
// config c, served by the shim at shim (as the node sees it), with runc's
// options taken from the node's "runc" handler.
func handlerTables(c *mainConfig, shim string) string {
	plugin := criPlugin(c.Version)
	binary := c.BinaryName
	if binary == "" {
		binary = "runc"
	}
	systemd := false
	if c.SystemdCgroup != nil {
		systemd = *c.SystemdCgroup
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[plugins.%q.containerd.runtimes.%s]\n", plugin, Handler)
	fmt.Fprintf(&b, "  runtime_type = %q\n", RuntimeType)
	fmt.Fprintf(&b, "  runtime_path = %q\n\n", shim)
	fmt.Fprintf(&b, "  [plugins.%q.containerd.runtimes.%s.options]\n", plugin, Handler)
	fmt.Fprintf(&b, "    # runc's options, as the node's runc handler has them.\n")
	fmt.Fprintf(&b, "    BinaryName = %q\n", binary)
	if c.Root != "" {
		fmt.Fprintf(&b, "    Root = %q\n", c.Root)
	}
	fmt.Fprintf(&b, "    SystemdCgroup = %t\n", systemd)
	return b.String()
}

// dropIn is the installer's drop-in, for a main config of version 3 or 4.
func dropIn(c *mainConfig, shim string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Written by %s install: the CRI runtime handler %q, served by\n", Installer, Handler)
	fmt.Fprintf(&b, "# %s. `%s uninstall` removes it.\n", shim, Installer)
	fmt.Fprintf(&b, "version = %d\n\n", c.Version)
	b.WriteString(handlerTables(c, shim))
	return b.Bytes()
}

// The marks around the block install appends to a version 2 config.
const (
	blockBegin = "# BEGIN " + Installer + " install: the CRI runtime handler \"" + Handler + "\" (uninstall removes this block)\n"
	blockEnd   = "# END " + Installer + " install\n"
)

// appendBlock returns a version 2 config with the handler's tables
// appended between marks: containerd 1.7 replaces a plugin's whole table
// with an imported file's, so a drop-in would take the node's CRI
// settings away.
func appendBlock(data []byte, c *mainConfig, shim string) []byte {
	out := append([]byte{}, data...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = append(out, '\n')
	out = append(out, blockBegin...)
	out = append(out, handlerTables(c, shim)...)
	return append(out, blockEnd...)
}

// hasBlock tells whether data holds the block appendBlock adds.
func hasBlock(data []byte) bool {
	return bytes.Contains(data, []byte(blockBegin)) && bytes.Contains(data, []byte(blockEnd))
}

// removeBlock takes the block appendBlock added (and the blank line
// before it) out of data.
func removeBlock(data []byte) []byte {
	i, j := bytes.Index(data, []byte(blockBegin)), bytes.Index(data, []byte(blockEnd))
	if i < 0 || j < i {
		return data
	}
	if i > 0 && data[i-1] == '\n' {
		i--
	}
	out := append([]byte{}, data[:i]...)
	return append(out, data[j+len(blockEnd):]...)
}

// importsLine matches the start of a top-level imports key.
var importsLine = regexp.MustCompile(`(?m)^[ \t]*imports[ \t]*=[ \t]*\[`)

// versionLine matches the top-level version key's line.
var versionLine = regexp.MustCompile(`(?m)^[ \t]*version[ \t]*=[ \t]*[0-9]+[ \t]*(#.*)?$`)

// addImport returns data (a main config whose imports do not pull in
// file) with file imported, changing as little text as it can: the
// imports array gets one more element before its closing bracket, or an
// imports line is added after the version line.
func addImport(data []byte, file string) ([]byte, error) {
	quoted := strconv.Quote(file)
	if loc := importsLine.FindIndex(data); loc != nil {
		end, err := arrayEnd(data, loc[1])
		if err != nil {
			return nil, err
		}
		body := string(data[loc[1]:end])
		if strings.Contains(body, "#") {
			return nil, fmt.Errorf("the imports array holds comments, which the installer does not edit: add %s to it by hand, or remove the comments: %w", quoted, ErrUnsupported)
		}
		elems := strings.TrimRight(body, " \t\r\n")
		at, insert := loc[1]+len(elems), ", "+quoted
		switch {
		case strings.TrimSpace(elems) == "":
			at, insert = loc[1], quoted
		case strings.HasSuffix(elems, ","):
			insert = " " + quoted
		}
		out := append([]byte{}, data[:at]...)
		out = append(out, insert...)
		return append(out, data[at:]...), nil
	}
	loc := versionLine.FindIndex(data)
	if loc == nil {
		return nil, fmt.Errorf("no top-level version line to add imports after: %w", ErrUnsupported)
	}
	out := append([]byte{}, data[:loc[1]]...)
	out = append(out, "\nimports = ["+quoted+"]"...)
	return append(out, data[loc[1]:]...), nil
}

// arrayEnd returns the offset of the bracket closing the array whose
// elements start at from, skipping strings and comments.
func arrayEnd(data []byte, from int) (int, error) {
	depth := 1
	for i := from; i < len(data); i++ {
		switch data[i] {
		case '"', '\'':
			q := data[i]
			for i++; i < len(data) && data[i] != q; i++ {
				if q == '"' && data[i] == '\\' {
					i++
				}
			}
		case '#':
			for i < len(data) && data[i] != '\n' {
				i++
			}
		case '[':
			depth++
		case ']':
			if depth--; depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("imports: no closing bracket: %w", ErrUnsupported)
}

// removeImport undoes addImport on a config changed since: the imports
// line it added, or the element it added to the array. Anything else is
// left as it is.
func removeImport(data []byte, file string) []byte {
	quoted := strconv.Quote(file)
	if line := "\nimports = [" + quoted + "]"; bytes.Contains(data, []byte(line)) {
		return bytes.Replace(data, []byte(line), nil, 1)
	}
	loc := importsLine.FindIndex(data)
	if loc == nil {
		return data
	}
	end, err := arrayEnd(data, loc[1])
	if err != nil {
		return data
	}
	body := string(data[loc[1]:end])
	for _, form := range []string{", " + quoted, " " + quoted, quoted + ", ", quoted} {
		if i := strings.Index(body, form); i >= 0 {
			body = body[:i] + body[i+len(form):]
			out := append([]byte{}, data[:loc[1]]...)
			out = append(out, body...)
			return append(out, data[end:]...)
		}
	}
	return data
}
