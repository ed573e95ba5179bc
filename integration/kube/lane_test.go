package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd-shim-wasm/containerd-shim-wasm/internal/cgroups"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The lane's own names: a second lane on the machine would clash, which
// the state file (below) tells.
const (
	bridgeName = "kubewasm0"
	subnet     = "10.88.78.0/24"
	gateway    = "10.88.78.1"
	// cgroupRoot is kubelet's cgroup root (cgroupfs driver): every pod's
	// cgroup is under it.
	cgroupRoot = "/shim-wasm-kube"
	// compileCgroup is the installed handler's default CompileCgroup: the
	// installer writes no CompileCgroup, so the node default is used. Each
	// compile's cgroup under it is removed when the compile ends.
	compileCgroup = "/containerd-shim-wasm"
	nodeName      = "lane-node"
	// stateFile records a running lane (its directory, mount namespace and
	// the sysctls kubelet changes), so that a lane killed before its
	// teardown (go test's -timeout) is swept by the next one.
	stateFile = "/run/shim-wasm-kube-lane.json"
)

// kubeletSysctls are what kubelet sets on start (protectKernelDefaults
// off) and the bridge plugin's ip_forward: put back at the end.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
}

// kubeletChains are the iptables chains kubelet makes.
var kubeletChains = []string{"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT", "KUBE-PROXY-CANARY"}

// laneState is stateFile's content.
type laneState struct {
	Dir        string
	MountNS    string
	Sysctls    map[string]string
	MadeMounts []string // mount points the lane created on the host
}

// proc is a process the lane started, with its log.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// lane is the one-node cluster: etcd, the control plane, containerd and
// kubelet as plain processes, containerd and kubelet in a mount namespace
// of their own where the node's /etc/containerd, /usr/local/bin and
// /var/lib are directories of node (as TestInstaller does).
type lane struct {
	dir        string
	node       string // the node's root as the installer sees it (hostPath)
	repo       string
	kubeBin    string
	ctrdBin    string
	socket     string // containerd's, under node
	apiPort    int
	kubeconfig string // super-admin.conf: rights from the start
	pki        string
	logs       string

	holder     *exec.Cmd // sleeps in the mount namespace
	mountNS    string
	state      laneState
	mu         sync.Mutex
	procs      []*proc
	containerd *proc
	restarts   int // of containerd, asked for through the fake systemctl
	stopWatch  chan struct{}
	watchDone  chan struct{}
	hadCompile bool
	chains     map[string]bool // before the lane
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(filepath.Dir(wd))
}

// toolDir is a directory from the environment, or the newest one built
// under .tools/SUB.
func toolDir(env, sub string) (string, error) {
	if d := os.Getenv(env); d != "" {
		return filepath.Abs(d)
	}
	dirs, _ := filepath.Glob(filepath.Join(repoRoot(), ".tools", sub, "v*"))
	sort.Strings(dirs)
	if len(dirs) == 0 {
		return "", fmt.Errorf("set %s or run `make kube` (it builds .tools/%s)", env, sub)
	}
	return dirs[len(dirs)-1], nil
}

// freePort is a TCP port free now on addr.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startLane builds and starts the cluster.
func startLane() (*lane, error) {
	if err := sweep(); err != nil {
		return nil, fmt.Errorf("sweeping a previous lane: %w", err)
	}
	l := &lane{repo: repoRoot(), stopWatch: make(chan struct{}), watchDone: make(chan struct{})}
	var err error
	if l.kubeBin, err = toolDir("KUBE_DIR", "kubernetes"); err != nil {
		return nil, err
	}
	if l.ctrdBin, err = toolDir("CONTAINERD_DIR", "containerd"); err != nil {
		return nil, err
	}
	if l.dir, err = os.MkdirTemp("", "shim-wasm-kube-"); err != nil {
		return nil, err
	}
	os.Chmod(l.dir, 0o755)
	l.node = filepath.Join(l.dir, "node")
	l.pki = filepath.Join(l.dir, "pki")
	l.logs = filepath.Join(l.dir, "logs")
	l.socket = filepath.Join(l.node, "run", "containerd", "containerd.sock")
	l.state = laneState{Dir: l.dir, Sysctls: map[string]string{}}
	for _, s := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			l.state.Sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	l.chains = listChains()
	l.hadCompile = len(cgroups.Dirs(cgroups.Root, compileCgroup)) > 0
	if err := l.saveState(); err != nil {
		return l, err
	}
	for _, d := range []string{l.logs, l.pki, filepath.Join(l.node, "etc", "containerd"), filepath.Join(l.node, "usr", "local", "bin"),
		filepath.Join(l.node, "usr", "bin"), filepath.Join(l.node, "var", "lib"), filepath.Dir(l.socket)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, err
		}
	}
	// The node's systemctl: it records "restart containerd" in the node's
	// /systemctl.log, which watchSystemctl acts on as systemd would.
	if err := goBuild(filepath.Join(l.node, "usr", "bin", "systemctl"), "./integration/testdata/fakesystemctl", "CGO_ENABLED=0"); err != nil {
		return l, err
	}
	if err := l.network(); err != nil {
		return l, err
	}
	if l.apiPort, err = freePort(gateway); err != nil {
		return l, err
	}
	if err := l.certificates(); err != nil {
		return l, err
	}
	if err := l.controlPlane(); err != nil {
		return l, err
	}
	if err := l.mountNamespace(); err != nil {
		return l, err
	}
	if err := l.startContainerd(); err != nil {
		return l, err
	}
	go l.watchSystemctl()
	if err := l.startKubelet(); err != nil {
		return l, err
	}
	return l, l.waitNodeReady()
}

func (l *lane) saveState() error {
	b, _ := json.Marshal(l.state)
	return os.WriteFile(stateFile, b, 0o644)
}

// network makes the lane's bridge with the gateway's address: the API
// server listens there, so that pods reach it (there is no kube-proxy).
// The bridge plugin takes the bridge as it finds it.
func (l *lane) network() error {
	cni := filepath.Join(l.dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		return err
	}
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "shim-wasm-kube", "plugins": [
  {"type": "bridge", "bridge": %q, "isGateway": true, "isDefaultGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q, "gateway": %q}]]}},
  {"type": "loopback"}]}`, bridgeName, filepath.Join(l.dir, "ipam"), subnet, gateway)
	if err := os.WriteFile(filepath.Join(cni, "10-shim-wasm-kube.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", gateway + "/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if _, err := run("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// certificates writes the PKI and the kubeconfigs with kubeadm's phases.
func (l *lane) certificates() error {
	cfg := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %[1]s
  bindPort: %[2]d
nodeRegistration:
  name: %[3]s
  criSocket: unix://%[4]s
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %[5]s
clusterName: shim-wasm-kube
certificatesDir: %[6]s
controlPlaneEndpoint: %[1]s:%[2]d
networking:
  serviceSubnet: 10.96.0.0/16
apiServer:
  certSANs: ["127.0.0.1", "%[1]s"]
`, gateway, l.apiPort, nodeName, l.socket, kubeVersion(l.kubeBin), l.pki)
	path := filepath.Join(l.dir, "kubeadm.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	kubeadm := filepath.Join(l.kubeBin, "kubeadm")
	if _, err := run(kubeadm, "init", "phase", "certs", "all", "--config", path); err != nil {
		return err
	}
	_, err := run(kubeadm, "init", "phase", "kubeconfig", "all", "--config", path, "--kubeconfig-dir", l.dir)
	l.kubeconfig = filepath.Join(l.dir, "super-admin.conf")
	return err
}

// kubeVersion is the version the build stamped (.version's first word).
func kubeVersion(dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, ".version"))
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return filepath.Base(dir)
}

// start starts a lane process; its output goes to logs/NAME.log.
func (l *lane) start(name string, wrap []string, bin string, args ...string) (*proc, error) {
	log, err := os.OpenFile(filepath.Join(l.logs, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	argv := append(append(append([]string{}, wrap...), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH="+l.ctrdBin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: log}
	go func() { cmd.Wait(); close(p.done) }()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// stopProc ends p: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitFor polls cond until it is nil or d passed; p's end is an error.
func waitFor(d time.Duration, p *proc, what string, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if p != nil && !p.running() {
			return fmt.Errorf("%s ended before %s: see its log", p.name, what)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// controlPlane starts etcd, the API server, the controller manager and
// the scheduler, and waits until the API server serves.
func (l *lane) controlPlane() error {
	etcdClient, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	etcdPeer, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	client, peer := fmt.Sprintf("http://127.0.0.1:%d", etcdClient), fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd, err := l.start("etcd", nil, filepath.Join(l.kubeBin, "etcd"), "--name", "lane", "--data-dir", filepath.Join(l.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "lane="+peer,
		"--listen-metrics-urls", "", "--log-level", "warn")
	if err != nil {
		return err
	}
	pki := func(name string) string { return filepath.Join(l.pki, name) }
	api, err := l.start("kube-apiserver", nil, filepath.Join(l.kubeBin, "kube-apiserver"),
		"--etcd-servers", client,
		"--bind-address", gateway, "--advertise-address", gateway, "--secure-port", strconv.Itoa(l.apiPort),
		"--tls-cert-file", pki("apiserver.crt"), "--tls-private-key-file", pki("apiserver.key"),
		"--client-ca-file", pki("ca.crt"),
		"--kubelet-client-certificate", pki("apiserver-kubelet-client.crt"), "--kubelet-client-key", pki("apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", pki("sa.pub"), "--service-account-signing-key-file", pki("sa.key"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true", "--profiling=false")
	if err != nil {
		return err
	}
	_ = etcd
	if err := waitFor(2*time.Minute, api, "the API server serves", func() error {
		_, err := l.kubectl(context.Background(), nil, "get", "--raw", "/readyz")
		return err
	}); err != nil {
		return err
	}
	// What kubeadm init does after its phases: the group of admin.conf and
	// of the API server's client certificate to kubelet (logs, exec,
	// attach) is cluster-admin.
	if _, err := l.kubectl(context.Background(), nil, "create", "clusterrolebinding", "kubeadm:cluster-admins", "--clusterrole=cluster-admin", "--group=kubeadm:cluster-admins"); err != nil {
		return err
	}
	cmPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	cmConf := filepath.Join(l.dir, "controller-manager.conf")
	if _, err := l.start("kube-controller-manager", nil, filepath.Join(l.kubeBin, "kube-controller-manager"),
		"--kubeconfig", cmConf, "--authentication-kubeconfig", cmConf, "--authorization-kubeconfig", cmConf,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(cmPort), "--leader-elect=false",
		"--use-service-account-credentials=true", "--service-account-private-key-file", pki("sa.key"),
		"--root-ca-file", pki("ca.crt"), "--cluster-signing-cert-file", pki("ca.crt"), "--cluster-signing-key-file", pki("ca.key"),
		"--controllers", "*,-nodeipam", "--profiling=false"); err != nil {
		return err
	}
	schedPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	schedConf := filepath.Join(l.dir, "scheduler.conf")
	_, err = l.start("kube-scheduler", nil, filepath.Join(l.kubeBin, "kube-scheduler"),
		"--kubeconfig", schedConf, "--authentication-kubeconfig", schedConf, "--authorization-kubeconfig", schedConf,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(schedPort), "--leader-elect=false", "--profiling=false")
	return err
}

// mountNamespace starts the process that holds the node's mount namespace:
// /etc/containerd, /usr/local/bin, /var/lib and /var/log (kubelet's pod
// logs) are the node directory's there. containerd and kubelet are
// started in it with nsenter.
func (l *lane) mountNamespace() error {
	for _, d := range []string{"/etc/containerd", "/usr/local/bin", "/var/lib", "/var/log"} {
		if err := os.MkdirAll(filepath.Join(l.node, d), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(d); os.IsNotExist(err) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			l.state.MadeMounts = append(l.state.MadeMounts, d)
		}
	}
	script := `for d in /etc/containerd /usr/local/bin /var/lib /var/log; do mount --bind "$H$d" $d || exit 1; done; echo ready; exec sleep infinity`
	l.holder = exec.Command("unshare", "--mount", "--propagation", "private", "env", "H="+l.node, "sh", "-c", script)
	l.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := l.holder.StdoutPipe()
	if err != nil {
		return err
	}
	l.holder.Stderr = os.Stderr
	if err := l.holder.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("the node's mount namespace: %q %v", line, err)
	}
	l.mountNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", l.holder.Process.Pid))
	if err != nil {
		return err
	}
	l.state.MountNS = l.mountNS
	return l.saveState()
}

// inNode is the prefix that runs a command in the node's mount namespace.
func (l *lane) inNode() []string {
	return []string{"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", l.holder.Process.Pid), "--"}
}

// containerdConfig is the node's containerd config before the install: a
// CRI node with runc, the lane's pause image, CNI and paths.
func (l *lane) containerdConfig() string {
	rt := `plugins."io.containerd.cri.v1.runtime"`
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[%[6]s]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %[7]q
[%[6]s.cni]
  conf_dir = %[8]q
  bin_dirs = ["/usr/lib/cni"]
[%[6]s.containerd]
  default_runtime_name = "runc"
[%[6]s.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[%[6]s.containerd.runtimes.runc.options]
  Root = %[9]q
`, filepath.Join(l.dir, "containerd", "root"), filepath.Join(l.dir, "containerd", "state"), l.socket, l.socket+".ttrpc",
		filepath.Join(l.dir, "containerd", "opt"), rt, pauseImage, filepath.Join(l.dir, "cni"), filepath.Join(l.dir, "runc"))
}

// startContainerd starts the node's containerd (its config at the node's
// /etc/containerd/config.toml) and waits until its CRI serves.
func (l *lane) startContainerd() error {
	cfg := filepath.Join(l.node, "etc", "containerd", "config.toml")
	if _, err := os.Stat(cfg); os.IsNotExist(err) {
		if err := os.WriteFile(cfg, []byte(l.containerdConfig()), 0o644); err != nil {
			return err
		}
	}
	p, err := l.start("containerd", l.inNode(), filepath.Join(l.ctrdBin, "containerd"), "--config", "/etc/containerd/config.toml")
	if err != nil {
		return err
	}
	l.containerd = p
	return waitFor(time.Minute, p, "containerd's CRI serves", func() error {
		_, err := l.handlers(context.Background())
		return err
	})
}

// handlers are the runtime handlers containerd's CRI serves.
func (l *lane) handlers(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+l.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := cri.NewRuntimeServiceClient(conn).Status(ctx, &cri.StatusRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range resp.RuntimeHandlers {
		out = append(out, h.Name)
	}
	return out, nil
}

// watchSystemctl plays systemd for the node: each "restart containerd" the
// fake systemctl records restarts containerd.
func (l *lane) watchSystemctl() {
	defer close(l.watchDone)
	logPath := filepath.Join(l.node, "systemctl.log")
	seen := 0
	for {
		select {
		case <-l.stopWatch:
			return
		case <-time.After(200 * time.Millisecond):
		}
		b, _ := os.ReadFile(logPath)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) == 0 {
			lines = nil
		}
		for ; seen < len(lines); seen++ {
			if lines[seen] != "restart containerd" {
				continue
			}
			l.mu.Lock()
			old := l.containerd
			l.mu.Unlock()
			old.stop(20 * time.Second)
			if err := l.startContainerd(); err != nil {
				fmt.Fprintf(os.Stderr, "kube lane: restarting containerd: %v\n", err)
			}
			l.mu.Lock()
			l.restarts++
			l.mu.Unlock()
		}
	}
}

// kubeletConfig is kubelet's config file.
func (l *lane) kubeletConfig(port int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: %[2]d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[3]q}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: %[4]s
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://%[5]s
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
rotateCertificates: false
serializeImagePulls: false
`, gateway, port, filepath.Join(l.pki, "ca.crt"), cgroupRoot, l.socket)
}

// startKubelet starts kubelet in the node's mount namespace, its cgroup
// root made first.
func (l *lane) startKubelet() error {
	for _, c := range v1Controllers() {
		if err := os.MkdirAll(filepath.Join(cgroups.Root, c, cgroupRoot), 0o755); err != nil {
			return err
		}
	}
	// cpuset: a new cgroup has no CPUs nor memory nodes until given its
	// parent's.
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		if b, err := os.ReadFile(filepath.Join(cgroups.Root, "cpuset", f)); err == nil {
			os.WriteFile(filepath.Join(cgroups.Root, "cpuset", cgroupRoot, f), b, 0o644)
		}
	}
	port, err := freePort(gateway)
	if err != nil {
		return err
	}
	cfg := filepath.Join(l.dir, "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(l.kubeletConfig(port)), 0o644); err != nil {
		return err
	}
	_, err = l.start("kubelet", l.inNode(), filepath.Join(l.kubeBin, "kubelet"),
		"--config", cfg, "--kubeconfig", filepath.Join(l.dir, "kubelet.conf"),
		"--root-dir", filepath.Join(l.dir, "kubelet"), "--cert-dir", filepath.Join(l.dir, "kubelet-pki"),
		"--node-ip", gateway, "--hostname-override", nodeName, "--v", "2")
	return err
}

// v1Controllers are the cgroup v1 hierarchies the lane makes its root in.
func v1Controllers() []string {
	var out []string
	ents, _ := os.ReadDir(cgroups.Root)
	for _, e := range ents {
		if e.IsDir() && e.Name() != "unified" {
			out = append(out, e.Name())
		}
	}
	return out
}

// waitNodeReady waits until the node is Ready and the default service
// account exists.
func (l *lane) waitNodeReady() error {
	kubelet := l.procs[len(l.procs)-1]
	if err := waitFor(3*time.Minute, kubelet, "the node is Ready", func() error {
		out, err := l.kubectl(context.Background(), nil, "get", "node", nodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err == nil && out != "True" {
			err = fmt.Errorf("Ready is %q", out)
		}
		return err
	}); err != nil {
		return err
	}
	return waitFor(2*time.Minute, nil, "the default service account exists", func() error {
		_, err := l.kubectl(context.Background(), nil, "get", "serviceaccount", "default")
		return err
	})
}

// kubectl runs kubectl as the cluster's admin.
func (l *lane) kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(l.kubeBin, "kubectl"), append([]string{"--kubeconfig", l.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// ctr runs ctr against the node's containerd in k8s.io.
func (l *lane) ctr(args ...string) (string, error) {
	return run(filepath.Join(l.ctrdBin, "ctr"), append([]string{"--address", l.socket, "-n", "k8s.io"}, args...)...)
}

// nsPids lists the processes in the node's mount namespace, the holder
// left out.
func nsPids(ns string, except int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == except {
			continue
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && link == ns {
			out = append(out, pid)
		}
	}
	return out
}

// stop removes the lane: every pod (through CRI), kubelet, containerd,
// their shims, the mount namespace, the control plane, then the bridge,
// the chains kubelet added, the cgroups and the directory. Leaks of the
// product (a shim or a container's process left) are errors.
func (l *lane) stop(keep bool) error {
	var errs []error
	step := time.Now()
	took := func(what string) {
		fmt.Printf("kube lane: teardown: %s in %.1f s\n", what, time.Since(step).Seconds())
		step = time.Now()
	}
	if l.containerd != nil {
		close(l.stopWatch)
		<-l.watchDone
	}
	// kubelet first (it would start the pods again), then the pods
	// through CRI, then containerd, then the control plane.
	l.mu.Lock()
	procs := append([]*proc(nil), l.procs...)
	l.mu.Unlock()
	for _, name := range []string{"kubelet", "containerd"} {
		if name == "containerd" && l.containerd != nil && l.containerd.running() {
			if err := l.removePods(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, p := range procs {
			if p.name == name && p.running() {
				p.stop(30 * time.Second)
			}
		}
		took(name)
	}
	if l.holder != nil && l.holder.Process != nil {
		if left := nsPids(l.mountNS, l.holder.Process.Pid); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes left in the node's mount namespace (shims): %v", describe(left)))
			for _, pid := range left {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		l.holder.Process.Kill()
		l.holder.Wait()
	}
	// The control plane in the reverse order of its start (the API server
	// waits for etcd while it drains).
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].running() {
			procs[i].stop(15 * time.Second)
		}
	}
	took("the control plane")
	errs = append(errs, l.state.cleanHost(l.chains, l.hadCompile)...)
	took("the host's bridge, chains, cgroups")
	if !keep && l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, err)
		}
	} else if l.dir != "" {
		fmt.Printf("kube lane: its directory and logs kept in %s\n", l.dir)
	}
	os.Remove(stateFile)
	return errors.Join(errs...)
}

// printLogs prints the end of each component's log (a failed run's
// lane directory is removed with them, unless KEEP_LANE is set).
func (l *lane) printLogs() {
	logs, _ := filepath.Glob(filepath.Join(l.logs, "*.log"))
	for _, p := range logs {
		b, _ := os.ReadFile(p)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		fmt.Printf("kube lane: the end of %s:\n%s\n", filepath.Base(p), strings.Join(lines, "\n"))
	}
}

// removePods stops and removes every pod sandbox of the node through CRI.
func (l *lane) removePods() error {
	conn, err := grpc.NewClient("unix://"+l.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	resp, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return nil // containerd is not serving: nothing to remove through it
	}
	var errs []error
	for _, sb := range resp.Items {
		if _, err := rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod %s: %w", sb.Metadata.GetName(), err))
		}
		if _, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s: %w", sb.Metadata.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

func describe(pids []int) string {
	var out []string
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("%d %q", pid, strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")))
	}
	return strings.Join(out, ", ")
}

// cleanHost takes off the host what a lane put there outside its
// directory: the bridge, kubelet's chains (those not there before), the
// cgroups (killing what is left in them, as an error), the mount points
// it made and the sysctls.
func (s laneState) cleanHost(chainsBefore map[string]bool, hadCompile bool) []error {
	var errs []error
	if _, err := os.Stat("/sys/class/net/" + bridgeName); err == nil {
		if _, err := run("ip", "link", "del", bridgeName); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeChains(chainsBefore); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroupTree(cgroupRoot); err != nil {
		errs = append(errs, err)
	}
	// The compile cgroup is the node default, shared with any other
	// handler of the machine using it (the integration tests'
	// TestInstaller): only removed if the lane made it and nothing uses
	// it, never its processes killed.
	if !hadCompile {
		for _, d := range cgroups.Dirs(cgroups.Root, compileCgroup) {
			os.Remove(d)
		}
	}
	for _, d := range s.MadeMounts {
		os.Remove(d)
	}
	for k, v := range s.Sysctls {
		if b, _ := os.ReadFile("/proc/sys/" + k); strings.TrimSpace(string(b)) != v {
			os.WriteFile("/proc/sys/"+k, []byte(v), 0o644)
		}
	}
	return errs
}

// removeCgroupTree removes cgroup path in every hierarchy, deepest first;
// processes still in it are killed, and are an error.
func removeCgroupTree(path string) error {
	var errs []error
	for _, top := range cgroups.Dirs(cgroups.Root, path) {
		var dirs []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			d := dirs[i]
			if b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs")); len(strings.TrimSpace(string(b))) > 0 {
				var pids []int
				for _, f := range strings.Fields(string(b)) {
					pid, _ := strconv.Atoi(f)
					pids = append(pids, pid)
				}
				errs = append(errs, fmt.Errorf("processes left in cgroup %s: %s", d, describe(pids)))
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			var err error
			for try := 0; try < 50; try++ {
				if err = os.Remove(d); err == nil || os.IsNotExist(err) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// iptables families and tables kubelet writes chains into.
var (
	iptablesBins   = []string{"iptables", "ip6tables"}
	iptablesTables = []string{"filter", "nat", "mangle"}
)

// listChains lists the chains of every family and table, as
// "BIN TABLE CHAIN".
func listChains() map[string]bool {
	out := map[string]bool{}
	for _, bin := range iptablesBins {
		for _, table := range iptablesTables {
			s, err := run(bin, "-w", "-t", table, "-S")
			if err != nil {
				continue
			}
			for _, line := range strings.Split(s, "\n") {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" {
					out[bin+" "+table+" "+f[1]] = true
				}
			}
		}
	}
	return out
}

// removeChains deletes kubelet's chains (KUBE-*) not in before, and the
// rules that jump to them: what others make meanwhile is left alone.
func removeChains(before map[string]bool) error {
	var errs []error
	for _, bin := range iptablesBins {
		for _, table := range iptablesTables {
			s, err := run(bin, "-w", "-t", table, "-S")
			if err != nil {
				continue
			}
			var made []string
			lines := strings.Split(s, "\n")
			for _, line := range lines {
				if f := strings.Fields(line); len(f) == 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-") && !before[bin+" "+table+" "+f[1]] {
					made = append(made, f[1])
				}
			}
			if len(made) == 0 {
				continue
			}
			isMade := map[string]bool{}
			for _, c := range made {
				isMade[c] = true
			}
			for _, line := range lines {
				f := strings.Fields(line)
				if len(f) < 4 || f[0] != "-A" || isMade[f[1]] {
					continue
				}
				for i := 0; i+1 < len(f); i++ {
					if (f[i] == "-j" || f[i] == "-g") && isMade[f[i+1]] {
						if _, err := run(bin, append([]string{"-w", "-t", table, "-D"}, unquote(f[1:])...)...); err != nil {
							errs = append(errs, err)
						}
						break
					}
				}
			}
			for _, c := range made {
				run(bin, "-w", "-t", table, "-F", c)
			}
			for _, c := range made {
				if _, err := run(bin, "-w", "-t", table, "-X", c); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// unquote joins iptables -S's quoted words ("-m comment --comment "a b"").
func unquote(f []string) []string {
	var out []string
	for i := 0; i < len(f); i++ {
		w := f[i]
		if strings.HasPrefix(w, `"`) {
			for !strings.HasSuffix(w, `"`) || w == `"` {
				if i+1 >= len(f) {
					break
				}
				i++
				w += " " + f[i]
			}
			w = strings.Trim(w, `"`)
		}
		out = append(out, w)
	}
	return out
}

// sweep removes what a lane killed before its teardown left: its
// processes (in its mount namespace or its cgroups), the bridge, kubelet's
// chains, the cgroups, the sysctls, the directory.
func sweep() error {
	b, err := os.ReadFile(stateFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var s laneState
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", stateFile, err)
	}
	fmt.Fprintf(os.Stderr, "kube lane: sweeping what a lane in %s left\n", s.Dir)
	if s.MountNS != "" {
		for _, pid := range nsPids(s.MountNS, 0) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Only kubelet's chains: the others were the machine's.
	before := listChains()
	for k := range before {
		for _, c := range kubeletChains {
			if strings.HasSuffix(k, " "+c) {
				delete(before, k)
			}
		}
	}
	errs := s.cleanHost(before, true)
	if s.Dir != "" && strings.HasPrefix(s.Dir, os.TempDir()) {
		os.RemoveAll(s.Dir)
	}
	if len(errs) == 0 {
		os.Remove(stateFile)
	}
	// What was left is the killed run's, reported in short.
	var lines []string
	for _, err := range errs {
		lines = append(lines, strings.Split(err.Error(), "\n")...)
	}
	for i, line := range lines {
		if i == 5 {
			fmt.Fprintf(os.Stderr, "kube lane: sweep: ... and %d more\n", len(lines)-i)
			break
		}
		fmt.Fprintf(os.Stderr, "kube lane: sweep: %s\n", line)
	}
	return nil
}

// goBuild builds a package of this repository.
func goBuild(out, pkg string, env ...string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}
