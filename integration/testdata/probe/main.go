// Command probe is the integration tests' Wasm guest (GOOS=wasip1): each
// subcommand exercises one thing a guest can see or do.
package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe CMD [ARGS]")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo": // each argument on its own line, bracketed
		for _, a := range args {
			fmt.Printf("[%s]\n", a)
		}
	case "stderr":
		fmt.Fprintln(os.Stdout, "to stdout")
		fmt.Fprintln(os.Stderr, "to stderr")
	case "env":
		env := os.Environ()
		sort.Strings(env)
		for _, kv := range env {
			fmt.Println(kv)
		}
	case "exit":
		n, _ := strconv.Atoi(args[0])
		os.Exit(n)
	case "cat":
		b, err := os.ReadFile(args[0])
		check(err)
		os.Stdout.Write(b)
	case "write":
		check(os.WriteFile(args[0], []byte(args[1]), 0o644))
		b, err := os.ReadFile(args[0])
		check(err)
		fmt.Printf("wrote %s\n", b)
	case "mkfiles": // DIR: make DIR/d and the files DIR/f and DIR/d/f, asking for 0700 and 0600
		check(os.Mkdir(args[0]+"/d", 0o700))
		check(os.WriteFile(args[0]+"/f", []byte("f"), 0o600))
		check(os.WriteFile(args[0]+"/d/f", []byte("d/f"), 0o600))
		fmt.Println("made")
	case "to": // write TEXT to PATH, as a program writing its output to a named file
		check(os.WriteFile(args[0], []byte(args[1]), 0o644))
	case "stdin":
		_, err := io.Copy(os.Stdout, os.Stdin)
		check(err)
	case "cwd":
		wd, err := os.Getwd()
		check(err)
		fmt.Println(wd)
	case "open": // try every path; report each
		for _, p := range args {
			f, err := os.Open(p)
			if err != nil {
				fmt.Printf("open %s: refused: %v\n", p, err)
				continue
			}
			b := make([]byte, 16)
			n, err := f.Read(b)
			f.Close()
			fmt.Printf("open %s: OPENED (read %d bytes, %v)\n", p, n, err)
		}
	case "openw":
		for _, p := range args {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				fmt.Printf("openw %s: refused: %v\n", p, err)
				continue
			}
			f.Close()
			fmt.Printf("openw %s: OPENED\n", p)
		}
	case "linkopen": // make a symlink to each target, then open through it
		for i, target := range args {
			link := fmt.Sprintf("/tmp/link-%d", i)
			if err := os.Symlink(target, link); err != nil {
				fmt.Printf("linkopen %s: refused: symlink: %v\n", target, err)
				continue
			}
			f, err := os.Open(link)
			if err != nil {
				fmt.Printf("linkopen %s: refused: %v\n", target, err)
				continue
			}
			f.Close()
			fmt.Printf("linkopen %s: OPENED\n", target)
		}
	case "swap": // DIR TARGET: make DIR a directory and a symlink to TARGET by turns, forever
		swap(args[0], args[1])
	case "raceopen": // DIR ROUNDS: open DIR/3 to DIR/9 ROUNDS times; count what was opened
		raceOpen(args[0], args[1])
	case "tick": // a numbered line every 100 ms, forever
		for i := 0; ; i++ {
			fmt.Println("tick", i)
			time.Sleep(100 * time.Millisecond)
		}
	case "clock": // wall time, a sleep measured on the monotonic clock, random bytes
		start := time.Now()
		time.Sleep(200 * time.Millisecond)
		b := make([]byte, 16)
		_, err := rand.Read(b)
		check(err)
		fmt.Printf("unix %d\nslept %d\nrandom %x\n", start.Unix(), time.Since(start).Milliseconds(), b)
	case "long": // one line of N bytes, then a short one
		n, _ := strconv.Atoi(args[0])
		fmt.Println(strings.Repeat("x", n))
		fmt.Println("short")
	case "ls":
		ents, err := os.ReadDir(args[0])
		check(err)
		for _, e := range ents {
			fmt.Println(e.Name())
		}
	case "spin": // optionally churn the runner's memory first, then spin forever
		if len(args) > 0 && args[0] == "gc" {
			var keep [][]byte
			for i := 0; i < 64; i++ {
				keep = append(keep, make([]byte, 4<<20))
				if len(keep) > 8 {
					keep = keep[1:]
				}
			}
			runtime.GC()
		}
		fmt.Println("spinning")
		x := 0
		for {
			x++
			if x == -1 {
				fmt.Println(x)
			}
		}
	case "bigpath": // stat a path of N MiB: the runner copies it into its own memory
		n, _ := strconv.Atoi(args[0])
		p := make([]byte, n<<20)
		for i := range p {
			p[i] = 'a'
		}
		fmt.Println("statting")
		fmt.Println("errno", statRaw(p))
	case "tty": // what stdin and stdout are, then each input line back
		for _, f := range []*os.File{os.Stdin, os.Stdout} {
			st, err := f.Stat()
			check(err)
			fmt.Printf("%s: terminal %v\n", f.Name(), st.Mode()&os.ModeCharDevice != 0)
		}
		buf := make([]byte, 256)
		for {
			n, err := os.Stdin.Read(buf)
			if n > 0 {
				fmt.Printf("got %q\n", buf[:n])
			}
			if err != nil || n == 0 || strings.Contains(string(buf[:n]), "quit") {
				return
			}
		}
	case "alloc": // allocate and touch 1 MiB blocks until the runtime gives up
		var keep [][]byte
		for i := 1; ; i++ {
			b := make([]byte, 1<<20)
			for j := 0; j < len(b); j += 4096 {
				b[j] = 1
			}
			keep = append(keep, b)
			if i%8 == 0 {
				fmt.Println("allocated", i, "MiB")
			}
		}
	case "sleep":
		fmt.Println("sleeping")
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		os.Exit(1)
	}
}

// swapNames are the files of the directory swap makes, each holding its
// own name: a process reading one through the directory can tell it got
// that file and no other.
var swapNames = []string{"3", "4", "5", "6", "7", "8", "9"}

// swap makes dir a directory (holding swapNames) and a symlink to target
// by turns, as fast as it can, renaming each into place: a second guest
// opening through dir races a directory checked then swapped.
func swap(dir, target string) {
	real, link := dir+".dir", dir+".link"
	if err := os.Mkdir(real, 0o755); err != nil {
		fail(err)
	}
	for _, n := range swapNames {
		if err := os.WriteFile(real+"/"+n, []byte(n), 0o644); err != nil {
			fail(err)
		}
	}
	if err := os.Symlink(target, link); err != nil {
		fail(err)
	}
	fmt.Println("swapping")
	for {
		for _, from := range []string{real, link} {
			if err := os.Rename(from, dir); err != nil {
				fail(err)
			}
			if err := os.Rename(dir, from); err != nil {
				fail(err)
			}
		}
	}
}

// raceOpen opens each of dir's swapNames rounds times while swap runs, and
// counts the files opened that are that file (ok), those that are not
// (escaped: what the symlink led to), and the refusals. An escape is named
// on a line of its own. It uses the system calls themselves: the os package
// would hand a descriptor that is not a regular file to its poller.
func raceOpen(dir, rounds string) {
	n, err := strconv.Atoi(rounds)
	if err != nil {
		fail(err)
	}
	var ok, escaped, refused int
	for i := 0; i < n; i++ {
		for _, name := range swapNames {
			fd, err := syscall.Open(dir+"/"+name, syscall.O_RDONLY, 0)
			if err != nil {
				refused++
				continue
			}
			var st syscall.Stat_t
			got := make([]byte, 8)
			var k int
			err = syscall.Fstat(fd, &st)
			regular := err == nil && st.Filetype == syscall.FILETYPE_REGULAR_FILE
			if regular { // never read a pipe: it could block
				if k, err = syscall.Read(fd, got); err != nil {
					k = 0
				}
			}
			syscall.Close(fd)
			if regular && string(got[:k]) == name {
				ok++
				continue
			}
			escaped++
			fmt.Printf("escaped: %s/%s opened a file of WASI type %d holding %q\n", dir, name, st.Filetype, got[:k])
		}
	}
	fmt.Printf("ok=%d escaped=%d refused=%d\n", ok, escaped, refused)
}

// fail reports err and exits 1.
func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
