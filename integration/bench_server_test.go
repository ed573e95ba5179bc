//go:build bench

package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// serverRow is what the server part measured of one build of the example
// HTTP server (examples/http-server).
type serverRow struct {
	key, title string
	idleCPU    time.Duration         // the container's CPU over serverIdle, idle
	cpuPer     map[int]time.Duration // CPU per request at a request rate (new connection each)
	rps        map[int]float64       // requests/s at a concurrency (keep-alive)
	p50, p99   map[int]time.Duration // latency at a concurrency
	workingSet int64                 // memory.usage minus inactive file, after the load
	rss        int64                 // the container process's RSS, after the load
	stat       map[string]int64      // memory.stat of the container, after the load
}

const serverIdle = 5 * time.Second

var (
	serverRates       = []int{2, 50}
	serverConcurrency = []int{1, 16}
)

// serverRounds is how many times each measurement is taken, the servers
// taking turns; the report gives the median.
const serverRounds = 3

// servers runs the example HTTP server as a Wasm container (warm cache, its
// listener pre-opened with WASM_LISTEN) and the same source built for
// Linux as a native runc container, both at once on the host network, and
// measures them in turns (serverRounds rounds, so that a slow spell of
// the machine hits both): idle CPU, CPU per request at fixed request rates
// (a new connection per request), requests/s and latency at concurrencies
// (keep-alive connections), and memory after the load.
func (b *bench) servers(t *testing.T) {
	runc := "io.containerd.runc.v2"
	type server struct {
		w    workload
		port int
		url  string
		pid  int
		cg   containerCgroup
		row  serverRow
		// per round
		idle     []time.Duration
		cpuPer   map[int][]time.Duration
		rps      map[int][]float64
		p50, p99 map[int][]time.Duration
	}
	ss := []*server{
		{w: workload{key: "server-native", title: "native (runc shim)", runtime: runc,
			flags: []string{"--runc-root", b.runcRoot, "--net-host"}, args: []string{"/http-server", "127.0.0.1:18181"}}, port: 18181},
		{w: workload{key: "server-wasm", title: "Wasm (this shim, warm cache)", runtime: runtimeName,
			flags: append(slices.Clone(b.warm), "--net-host", "--env", "WASM_LISTEN=127.0.0.1:18180"), args: []string{"/http-server.wasm"}}, port: 18180},
	}
	for _, s := range ss {
		id := "bench-" + s.w.key
		s.url = fmt.Sprintf("http://127.0.0.1:%d/bench", s.port)
		// A first run compiles the module into the warm cache.
		b.detached(t, s.w, id)
		if err := waitHTTP(s.url, time.Minute); err != nil {
			t.Fatalf("%s: %v", s.w.title, err)
		}
		b.remove(id)
		s.pid = b.detached(t, s.w, id)
		if err := waitHTTP(s.url, time.Minute); err != nil {
			t.Fatalf("%s: %v", s.w.title, err)
		}
		cg, err := cgroupOf(s.pid)
		if err != nil {
			t.Fatal(err)
		}
		s.cg = cg
		s.cpuPer, s.rps = map[int][]time.Duration{}, map[int][]float64{}
		s.p50, s.p99 = map[int][]time.Duration{}, map[int][]time.Duration{}
	}
	time.Sleep(2 * time.Second) // start-up over
	for round := 0; round < serverRounds; round++ {
		for _, s := range ss {
			c0 := s.cg.cpu()
			time.Sleep(serverIdle)
			s.idle = append(s.idle, s.cg.cpu()-c0)
		}
		for _, rate := range serverRates {
			n := rate * 10
			if rate > 10 {
				n = rate * 4
			}
			for _, s := range ss {
				c0 := s.cg.cpu()
				if err := atRate(s.url, rate, n); err != nil {
					t.Fatalf("%s at %d requests/s: %v", s.w.title, rate, err)
				}
				time.Sleep(time.Second) // what a request leaves behind (lingering closes) counts too
				s.cpuPer[rate] = append(s.cpuPer[rate], (s.cg.cpu()-c0)/time.Duration(n))
			}
		}
		for _, c := range serverConcurrency {
			for _, s := range ss {
				lat, n, err := closedLoop(s.url, c, 5*time.Second)
				if err != nil {
					t.Fatalf("%s at concurrency %d: %v", s.w.title, c, err)
				}
				s.rps[c] = append(s.rps[c], float64(n)/5)
				s.p50[c] = append(s.p50[c], percentile(lat, 50))
				s.p99[c] = append(s.p99[c], percentile(lat, 99))
			}
		}
	}
	for _, s := range ss {
		row := serverRow{key: s.w.key, title: s.w.title, idleCPU: median(s.idle), cpuPer: map[int]time.Duration{}, rps: map[int]float64{},
			p50: map[int]time.Duration{}, p99: map[int]time.Duration{}}
		for _, r := range serverRates {
			row.cpuPer[r] = median(s.cpuPer[r])
		}
		for _, c := range serverConcurrency {
			rps := slices.Clone(s.rps[c])
			slices.Sort(rps)
			row.rps[c] = rps[len(rps)/2]
			row.p50[c], row.p99[c] = median(s.p50[c]), median(s.p99[c])
		}
		row.workingSet, row.stat = s.cg.memory()
		row.rss = procStatus(s.pid, "VmRSS")
		b.server = append(b.server, row)
		t.Logf("%s: idle %v, cpu/request %v (rounds %v), rps %v, p50 %v, p99 %v, working set %s", s.w.title, row.idleCPU, row.cpuPer, s.cpuPer, row.rps, row.p50, row.p99, mb(row.workingSet))
		b.remove("bench-" + s.w.key)
	}
}

// waitHTTP polls url until it answers 200.
func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// atRate sends n requests to url, rate a second, each on a new connection.
func atRate(url string, rate, n int) error {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		if err := get(client, url); err != nil {
			return err
		}
	}
	return nil
}

// closedLoop has c clients (keep-alive connections) send requests to url
// back to back for d, and returns every request's latency and how many
// there were.
func closedLoop(url string, c int, d time.Duration) ([]time.Duration, int, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: c, MaxConnsPerHost: c}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var errs atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(end) {
				start := time.Now()
				if err := get(client, url); err != nil {
					if errs.Add(1) == 1 {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return lat, len(lat), firstErr
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || !strings.Contains(string(body), "you asked for") {
		return fmt.Errorf("status %s, body %q", resp.Status, body)
	}
	return nil
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}

// containerCgroup names a container's v1 cpuacct and memory cgroup
// directories.
type containerCgroup struct{ cpuacct, mem string }

// cgroupOf finds the cgroups of process pid (v1, as on this machine).
func cgroupOf(pid int) (containerCgroup, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return containerCgroup{}, err
	}
	var cg containerCgroup
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			switch c {
			case "cpuacct":
				cg.cpuacct = filepath.Join("/sys/fs/cgroup/cpuacct", f[2])
			case "memory":
				cg.mem = filepath.Join("/sys/fs/cgroup/memory", f[2])
			}
		}
	}
	if cg.cpuacct == "" || cg.mem == "" {
		return cg, fmt.Errorf("process %d: no v1 cpuacct and memory cgroups in %q", pid, data)
	}
	return cg, nil
}

// cpu is the cgroup's CPU time.
func (c containerCgroup) cpu() time.Duration {
	data, _ := os.ReadFile(filepath.Join(c.cpuacct, "cpuacct.usage"))
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return time.Duration(n)
}

// memory returns the working set as the kubelet computes it (usage minus
// inactive file pages) and memory.stat.
func (c containerCgroup) memory() (int64, map[string]int64) {
	stat := map[string]int64{}
	data, _ := os.ReadFile(filepath.Join(c.mem, "memory.stat"))
	for _, l := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			stat[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	data, _ = os.ReadFile(filepath.Join(c.mem, "memory.usage_in_bytes"))
	usage, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return usage - stat["total_inactive_file"], stat
}

// serverReport is the server part of the report.
func (b *bench) serverReport(add func(string, ...any)) {
	if len(b.server) != 2 {
		return
	}
	nat, wasm := b.server[0], b.server[1]
	add("### An HTTP server: examples/http-server, Wasm against the same source built native")
	add("")
	add("Both on the host network, without limits; the client is Go's net/http in the benchmark process, on the same machine. CPU is the container cgroup's (`cpuacct.usage`); at a fixed rate each request opens a new connection (CPU counted until 1 s after the last); at a concurrency the clients keep their connections for %s. Medians of %d rounds, the servers taking turns.", "5 s", serverRounds)
	add("")
	add("| Measure | native | Wasm | Wasm vs native |")
	add("| --- | ---: | ---: | ---: |")
	ratio := func(a, b float64) string {
		if b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2fx", a/b)
	}
	add("| idle CPU over %s | %s | %s | %s |", serverIdle, ms1(nat.idleCPU), ms1(wasm.idleCPU), ratio(float64(wasm.idleCPU), float64(nat.idleCPU)))
	for _, r := range serverRates {
		add("| CPU per request at %d requests/s | %s | %s | %s |", r, us(nat.cpuPer[r]), us(wasm.cpuPer[r]), ratio(float64(wasm.cpuPer[r]), float64(nat.cpuPer[r])))
	}
	for _, c := range serverConcurrency {
		add("| requests/s at concurrency %d | %.0f | %.0f | %s |", c, nat.rps[c], wasm.rps[c], ratio(wasm.rps[c], nat.rps[c]))
		add("| p50 / p99 latency at concurrency %d | %s / %s | %s / %s | %s / %s |", c, us(nat.p50[c]), us(nat.p99[c]), us(wasm.p50[c]), us(wasm.p99[c]),
			ratio(float64(wasm.p50[c]), float64(nat.p50[c])), ratio(float64(wasm.p99[c]), float64(nat.p99[c])))
	}
	add("| working set (usage − inactive file) | %s | %s | %s |", mb(nat.workingSet), mb(wasm.workingSet), ratio(float64(wasm.workingSet), float64(nat.workingSet)))
	add("| of which anonymous (total_rss) | %s | %s | |", mb(nat.stat["total_rss"]), mb(wasm.stat["total_rss"]))
	add("| of which file (total_active_file) | %s | %s | |", mb(nat.stat["total_active_file"]), mb(wasm.stat["total_active_file"]))
	add("| process RSS | %s | %s | |", mb(nat.rss), mb(wasm.rss))
	add("")
	for _, r := range serverRates {
		limit := 2*nat.cpuPer[r] + time.Millisecond
		b.targets = append(b.targets, fmt.Sprintf("| server CPU per request at %d/s ≤ 2x native + 1 ms = %s | %s | %s |", r, us(limit), us(wasm.cpuPer[r]), verdict(wasm.cpuPer[r] <= limit)))
	}
	b.targets = append(b.targets, fmt.Sprintf("| idle server: no CPU (≤ 1 ms over %s) | %s | %s |", serverIdle, ms1(wasm.idleCPU), verdict(wasm.idleCPU <= time.Millisecond)))
}

func us(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
	return ms1(d)
}
