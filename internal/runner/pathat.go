package runner

import (
	"context"
	"path"
	"slices"
	"strings"

	"github.com/tetratelabs/wazero/api"
)

// pathArgs says where a WASI path_* function takes its (directory
// descriptor, path, path length) triples and the guest memory it writes
// results to, as indexes into its parameters.
type pathArgs struct {
	paths [][3]int // fd, path pointer, path length
	outs  [][2]int // pointer, length (or a fixed size if the index is negative: -size)
	opens int      // path_open: the index of result.opened_fd; else -1
}

// pathFunctions are the WASI functions that resolve a path relative to a
// directory descriptor. path_symlink's first path is the link's content,
// not resolved.
var pathFunctions = map[string]pathArgs{
	"path_create_directory":   {paths: [][3]int{{0, 1, 2}}, opens: -1},
	"path_filestat_get":       {paths: [][3]int{{0, 2, 3}}, outs: [][2]int{{4, -64}}, opens: -1},
	"path_filestat_set_times": {paths: [][3]int{{0, 2, 3}}, opens: -1},
	"path_link":               {paths: [][3]int{{0, 2, 3}, {4, 5, 6}}, opens: -1},
	"path_open":               {paths: [][3]int{{0, 2, 3}}, outs: [][2]int{{8, -4}}, opens: 8},
	"path_readlink":           {paths: [][3]int{{0, 1, 2}}, outs: [][2]int{{3, 4}, {5, -4}}, opens: -1},
	"path_remove_directory":   {paths: [][3]int{{0, 1, 2}}, opens: -1},
	"path_rename":             {paths: [][3]int{{0, 1, 2}, {3, 4, 5}}, opens: -1},
	"path_symlink":            {paths: [][3]int{{2, 3, 4}}, outs: [][2]int{{0, 1}}, opens: -1},
	"path_unlink_file":        {paths: [][3]int{{0, 1, 2}}, opens: -1},
}

// pathWrappers returns wazero's path_* functions (from orig, by name)
// made to resolve, as Linux does, a path that goes above its directory
// descriptor ("../a", ".."), which wazero refuses (EPERM). wazero checks a
// path lexically against the descriptor, so the wrapper hands wazero the
// same file as a path from the root instead: the directory's path (its
// symlinks resolved by resolve, as the kernel resolves ".." from where
// the directory is) joined with the path, never above "/" (where ".."
// stays, as on Linux). An absolute path is left to wazero, which refuses
// it with EPERM, as WASI requires (a path is relative to its descriptor;
// wasi-libc and Go make a program's absolute paths relative to a
// pre-opened directory before they call). The rewritten path is written, for the call only,
// to guest memory no argument of the call points to, and the guest's bytes
// there are put back before the call returns: the guest is one thread,
// stopped in the call. path_open's wrapper also records the path of each
// descriptor it opens.
func (t *guestFDs) pathWrappers(orig map[string]api.GoModuleFunction, resolve func(string) string) map[string]api.GoModuleFunction {
	out := map[string]api.GoModuleFunction{}
	for name, args := range pathFunctions {
		fn := orig[name]
		if fn == nil {
			continue
		}
		out[name] = api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			t.callAt(ctx, mod, stack, fn, args, resolve)
		})
	}
	return out
}

// span is a range of guest memory.
type span struct{ at, size uint64 }

func (t *guestFDs) callAt(ctx context.Context, mod api.Module, stack []uint64, fn api.GoModuleFunction, args pathArgs, resolve func(string) string) {
	mem := mod.Memory()
	if mem == nil {
		fn.Call(ctx, mod, stack)
		return
	}
	// What the call reads and writes: scratch space must avoid it.
	var busy []span
	for _, o := range args.outs {
		size := uint64(-o[1])
		if o[1] >= 0 {
			size = uint64(uint32(stack[o[1]]))
		}
		busy = append(busy, span{uint64(uint32(stack[o[0]])), size})
	}
	type rewrite struct {
		idx  [3]int
		path string
	}
	var rewrites []rewrite
	opened := "" // path_open: what the new descriptor is, from the root
	for _, p := range args.paths {
		fd, ptr, size := uint32(stack[p[0]]), uint32(stack[p[1]]), uint32(stack[p[2]])
		busy = append(busy, span{uint64(ptr), uint64(size)})
		b, ok := mem.Read(ptr, size)
		if !ok {
			continue // wazero reports EFAULT
		}
		name := string(b)
		dir, known := t.paths[fd]
		if args.opens >= 0 && known {
			opened = fromRoot(dir, name, resolve, false)
		}
		if !climbs(name) {
			continue
		}
		if _, rootKnown := t.paths[rootFD]; !rootKnown || !known {
			continue // wazero refuses it, as before
		}
		rewrites = append(rewrites, rewrite{p, fromRoot(dir, name, resolve, true)})
	}
	if args.opens >= 0 && len(rewrites) > 0 {
		opened = rewrites[0].path
	}

	// Write each rewritten path to free guest memory and point the call
	// at it, from the root.
	type savedBytes struct {
		at  uint32
		old []byte
	}
	var saved []savedBytes
	for _, r := range rewrites {
		at, ok := freeSpan(busy, uint32(len(r.path)), mem.Size())
		if !ok {
			continue
		}
		old, _ := mem.Read(at, uint32(len(r.path)))
		saved = append(saved, savedBytes{at, slices.Clone(old)})
		mem.Write(at, []byte(r.path))
		busy = append(busy, span{uint64(at), uint64(len(r.path))})
		stack[r.idx[0]], stack[r.idx[1]], stack[r.idx[2]] = rootFD, uint64(at), uint64(len(r.path))
	}
	resultFD := uint32(0)
	if args.opens >= 0 {
		resultFD = uint32(stack[args.opens])
	}
	fn.Call(ctx, mod, stack)
	for i := len(saved) - 1; i >= 0; i-- {
		mem.Write(saved[i].at, saved[i].old)
	}
	if args.opens >= 0 && stack[0] == errnoSuccess && opened != "" {
		if fd, ok := mem.ReadUint32Le(resultFD); ok {
			t.paths[fd] = opened
		}
	}
}

// climbs reports whether relative path p goes above its directory once
// cleaned (which wazero refuses). An absolute path does not: it is no
// path relative to a directory at all.
func climbs(p string) bool {
	c := path.Clean(p)
	return c == ".." || strings.HasPrefix(c, "../")
}

// fromRoot returns name, relative to directory dir (a path from the root),
// as a path from the root: ".." stops at the root, as on Linux; with
// physical, dir's symlinks are resolved first (resolve), so that ".."
// leads where the kernel's would. A trailing slash is kept.
func fromRoot(dir, name string, resolve func(string) string, physical bool) string {
	if !path.IsAbs(name) {
		if physical && resolve != nil {
			dir = resolve(dir)
		}
		name = "/" + dir + "/" + name
	}
	p := strings.TrimPrefix(path.Clean(name), "/")
	if p == "" {
		p = "."
	}
	if strings.HasSuffix(name, "/") && p != "." {
		p += "/"
	}
	return p
}

// freeSpan finds size bytes of guest memory (of memSize) that overlap no
// busy span, lowest first.
func freeSpan(busy []span, size, memSize uint32) (uint32, bool) {
	candidates := []uint64{0}
	for _, b := range busy {
		candidates = append(candidates, b.at+b.size)
	}
	slices.Sort(candidates)
	n := uint64(size)
	for _, at := range candidates {
		if at+n > uint64(memSize) {
			continue
		}
		free := true
		for _, b := range busy {
			if at < b.at+b.size && b.at < at+n {
				free = false
				break
			}
		}
		if free {
			return uint32(at), true
		}
	}
	return 0, false
}
