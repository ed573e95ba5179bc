package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCRIOperate plays kubelet with a running Wasm container under
// limits: its stats, ExecSync, UpdateContainerResources (the cgroup and
// the cap on guest memory growth) and pause-free operation.
func TestCRIOperate(t *testing.T) {
	c := startCRI(t)
	ctx := context.Background()
	podID, podCfg := c.pod(t, "ops", "wasm")
	id := c.containerConfig(t, podID, podCfg, &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "spin"},
		Image:    &cri.ImageSpec{Image: e.imageName},
		Command:  []string{"/probe.wasm"},
		Args:     []string{"spin"},
		LogPath:  "spin.log",
		Linux: &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{
			MemoryLimitInBytes: 96 * mib, CpuQuota: 20000, CpuPeriod: 100000,
		}},
	})
	c.containerPid(t, id)
	if n := criCgroupValue(t, id, "memory.limit_in_bytes"); n != 96*mib {
		t.Errorf("memory.limit_in_bytes %d", n)
	}
	if n := criCgroupValue(t, id, "cpu.cfs_quota_us"); n != 20000 {
		t.Errorf("cpu.cfs_quota_us %d", n)
	}

	// Stats: CPU and memory, as the cgroup files have them.
	time.Sleep(time.Second)
	stats, err := c.rt.ContainerStats(ctx, &cri.ContainerStatsRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStats: %v", err)
	}
	cpu := stats.Stats.GetCpu().GetUsageCoreNanoSeconds().GetValue()
	usage := criCgroupValue(t, id, "cpuacct.usage")
	if cpu == 0 || uint64(usage) < cpu {
		t.Errorf("CPU usage: stats %d ns, then cpuacct.usage %d ns", cpu, usage)
	}
	ws := stats.Stats.GetMemory().GetWorkingSetBytes().GetValue()
	mem := criCgroupValue(t, id, "memory.usage_in_bytes")
	if ws < 1<<20 || ws > uint64(mem)*2 || uint64(mem) > 2*ws+(16<<20) {
		t.Errorf("memory: working set %d, memory.usage_in_bytes %d", ws, mem)
	}
	list, err := c.rt.ListContainerStats(ctx, &cri.ListContainerStatsRequest{Filter: &cri.ContainerStatsFilter{PodSandboxId: podID}})
	if err != nil {
		t.Fatalf("ListContainerStats: %v", err)
	}
	found := false
	for _, s := range list.Stats {
		found = found || s.Attributes.Id == id && s.Cpu.GetUsageCoreNanoSeconds().GetValue() > 0
	}
	if !found {
		t.Errorf("ListContainerStats has no CPU usage of %s: %v", id, list.Stats)
	}

	// ExecSync of Wasm modules into the running container.
	if resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: []string{"/probe.wasm", "echo", "exec'd"}, Timeout: 60}); err != nil ||
		resp.ExitCode != 0 || string(resp.Stdout) != "[exec'd]\n" {
		t.Errorf("ExecSync echo: %v %+v", err, resp)
	}
	if resp, err := c.rt.ExecSync(ctx, &cri.ExecSyncRequest{ContainerId: id, Cmd: []string{"/exit42.wasm"}, Timeout: 60}); err != nil || resp.ExitCode != 42 {
		t.Errorf("ExecSync exit42: %v %+v", err, resp)
	}
	// Exec through the streaming server, as kubectl exec reaches it.
	if out, _, status := c.streamExec(t, id, "/probe.wasm", "echo", "streamed"); out != "[streamed]\n" || !strings.Contains(status, "Success") {
		t.Errorf("Exec: stdout %q, status %s", out, status)
	}
	if _, _, status := c.streamExec(t, id, "/exit42.wasm"); !strings.Contains(status, `"ExitCode","message":"42"`) {
		t.Errorf("Exec exit42: status %s", status)
	}
	// An exec's guest memory is capped by the container's limit, less what
	// the container's own runner uses.
	before := c.growExec(t, id)
	if before < 16 || before > 96-8 {
		t.Errorf("an exec grew to %d MiB under a 96 MiB limit", before)
	}

	// UpdateContainerResources: the cgroup, and the cap.
	if _, err := c.rt.UpdateContainerResources(ctx, &cri.UpdateContainerResourcesRequest{ContainerId: id, Linux: &cri.LinuxContainerResources{
		MemoryLimitInBytes: 192 * mib, CpuQuota: 50000, CpuPeriod: 100000,
	}}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if n := criCgroupValue(t, id, "memory.limit_in_bytes"); n != 192*mib {
		t.Errorf("memory.limit_in_bytes after update %d", n)
	}
	if n := criCgroupValue(t, id, "cpu.cfs_quota_us"); n != 50000 {
		t.Errorf("cpu.cfs_quota_us after update %d", n)
	}
	after := c.growExec(t, id)
	t.Logf("exec grew to %d MiB under 96 MiB, %d MiB under 192 MiB", before, after)
	if after < before+80 || after > 192-8 {
		t.Errorf("an exec grew to %d MiB under 192 MiB, %d MiB under 96", after, before)
	}
	if resp, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id}); err != nil || resp.Status.State != cri.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container after the execs: %v, %v", resp.GetStatus().GetState(), err)
	}
	// Logs: a failing guest's reason, with the pod's names, at the level
	// containerd runs at (info: no debug lines).
	trap := c.container(t, podID, podCfg, "trap", "/trap.wasm")
	if st := c.waitExit(t, trap); st.ExitCode != 134 {
		t.Errorf("trap: exit code %d", st.ExitCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
		var line string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `msg="wasm guest failed"`) && strings.Contains(l, " id="+trap+" ") {
				line = l
			}
		}
		if line != "" {
			for _, want := range []string{"level=error", "namespace=k8s.io", "sandbox=" + podID, "unreachable"} {
				if !strings.Contains(line, want) {
					t.Errorf("log line lacks %s: %s", want, line)
				}
			}
			if strings.Contains(string(b), "level=debug") {
				t.Error("debug lines in the log of a containerd at level info")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("no log line for the failed guest %s", trap)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, err := c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

// TestCRIOOMKilled: a Wasm container that dies out of memory is shown as
// OOMKilled, as a native one is, whether its guest failed after the
// runner refused a grow at the limit (its own status: Go's 2) or the
// kernel killed the runner (137).
func TestCRIOOMKilled(t *testing.T) {
	c := startCRI(t)
	podID, podCfg := c.pod(t, "oom", "wasm")
	for _, tt := range []struct {
		name string
		args []string
		code int32
	}{
		{"guest-out-of-memory", []string{"alloc"}, 2},
		{"kernel-oom-kill", []string{"bigpath", "16"}, 137},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := c.containerConfig(t, podID, podCfg, &cri.ContainerConfig{
				Metadata: &cri.ContainerMetadata{Name: tt.name},
				Image:    &cri.ImageSpec{Image: e.imageName},
				Command:  []string{"/probe.wasm"},
				Args:     tt.args,
				LogPath:  tt.name + ".log",
				Linux:    &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{MemoryLimitInBytes: 64 * mib}},
			})
			st := c.waitExit(t, id)
			// CRI handles the OOM event and the exit in turn: the reason
			// may follow the exit by a moment.
			deadline := time.Now().Add(10 * time.Second)
			for st.Reason != "OOMKilled" && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				resp, err := c.rt.ContainerStatus(context.Background(), &cri.ContainerStatusRequest{ContainerId: id})
				if err != nil {
					t.Fatal(err)
				}
				st = resp.Status
			}
			if st.Reason != "OOMKilled" || st.ExitCode != tt.code {
				t.Errorf("reason %q, exit %d; want OOMKilled, %d (message %q)", st.Reason, st.ExitCode, tt.code, st.Message)
			}
		})
	}
}
