// Package kube is the kubelet lane (make kube): a one-node Kubernetes
// cluster started as plain processes (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet with the cgroupfs
// driver) against a private containerd, the handler installed by
// deploy/kubernetes/installer.yaml's DaemonSet through a kustomize
// overlay, and tests through the API server with kubectl.
//
// It needs root, Kubernetes and etcd built into .tools/kubernetes/VERSION
// (scripts/build-kubernetes.sh) and containerd into
// .tools/containerd/VERSION (make does both); KUBE_DIR and CONTAINERD_DIR
// name other directories. KEEP_LANE=1 keeps the lane's directory (logs,
// configs) after the run; without it, a failed run prints the end of each
// component's log before the lane's directory goes.
package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var (
	l   *lane
	fix *fixtures
)

func TestMain(m *testing.M) {
	os.Exit(mainTest(m))
}

func mainTest(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "the kubelet lane needs root")
		return 1
	}
	start := time.Now()
	var err error
	l, err = startLane()
	if err == nil {
		fix, err = l.buildFixtures()
	}
	if err == nil {
		err = l.images(fix)
	}
	if err == nil {
		err = l.install(fix)
	}
	code := 0
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube lane: start: %v\n", err)
		code = 1
	} else {
		fmt.Printf("kube lane: cluster up and the handler installed in %.1f s (containerd restarted %d times by the installer)\n", time.Since(start).Seconds(), l.restarts)
		code = m.Run()
	}
	if l != nil {
		stopStart := time.Now()
		if code != 0 {
			l.printLogs()
		}
		if err := l.stop(os.Getenv("KEEP_LANE") != ""); err != nil {
			fmt.Fprintf(os.Stderr, "kube lane: teardown: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		fmt.Printf("kube lane: torn down in %.1f s; %.1f s in all\n", time.Since(stopStart).Seconds(), time.Since(start).Seconds())
	}
	return code
}

// k runs kubectl, failing the test on an error.
func k(t testing.TB, args ...string) string {
	t.Helper()
	out, err := l.kubectl(context.Background(), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply creates the objects of a manifest, deleted at the test's end
// (unless keep).
func apply(t testing.TB, manifest string) {
	t.Helper()
	if _, err := l.kubectl(context.Background(), []byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.kubectl(context.Background(), []byte(manifest), "delete", "--ignore-not-found", "--wait=true", "--timeout=2m", "-f", "-")
	})
}

// podArgs are kubectl's arguments naming pod name, "NAMESPACE/NAME" or
// "NAME" (in default).
func podArgs(name string) []string {
	if ns, n, ok := strings.Cut(name, "/"); ok {
		return []string{"-n", ns, n}
	}
	return []string{name}
}

// getPod reads a pod ("NAMESPACE/NAME" or "NAME").
func getPod(t testing.TB, name string) *corev1.Pod {
	t.Helper()
	out := k(t, append(append([]string{"get", "pod"}, podArgs(name)...), "-o", "json")...)
	var p corev1.Pod
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("pod %s: %v", name, err)
	}
	return &p
}

// waitPod waits until cond holds of pod name (cond returns "" then, or
// what it is waiting for).
func waitPod(t testing.TB, name string, d time.Duration, cond func(p *corev1.Pod) string) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := l.kubectl(context.Background(), nil, append(append([]string{"get", "pod"}, podArgs(name)...), "-o", "json")...)
		var p corev1.Pod
		if err == nil {
			err = json.Unmarshal([]byte(out), &p)
		}
		why := ""
		if err == nil {
			if why = cond(&p); why == "" {
				return &p
			}
		} else {
			why = err.Error()
		}
		if time.Now().After(deadline) {
			desc, _ := l.kubectl(context.Background(), nil, append([]string{"describe", "pod"}, podArgs(name)...)...)
			t.Fatalf("pod %s: waited %v for %s\n%s", name, d, why, desc)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ready says why pod p is not Ready ("" if it is).
func ready(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return ""
		}
	}
	return fmt.Sprintf("Ready (phase %s)", p.Status.Phase)
}

// phase waits for a pod phase.
func phase(want corev1.PodPhase) func(p *corev1.Pod) string {
	return func(p *corev1.Pod) string {
		if p.Status.Phase == want {
			return ""
		}
		return fmt.Sprintf("phase %s (now %s)", want, p.Status.Phase)
	}
}

// containerStatus is the status of container name of p (init containers
// too).
func containerStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// logs returns a container's log.
func logs(t testing.TB, pod, container string, extra ...string) string {
	t.Helper()
	return k(t, append([]string{"logs", pod, "-c", container}, extra...)...)
}

// waitLogs waits until a container's log holds want.
func waitLogs(t testing.TB, pod, container, want string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := l.kubectl(context.Background(), nil, "logs", pod, "-c", container)
		if err == nil && strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log of %s/%s has no %q in %v: %q %v", pod, container, want, d, out, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// events lists the events of an object (its name), as "Reason: message".
func events(t testing.TB, name string) []string {
	t.Helper()
	out := k(t, "get", "events", "--field-selector", "involvedObject.name="+name, "-o", "json")
	var list corev1.EventList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var evs []string
	for _, e := range list.Items {
		evs = append(evs, fmt.Sprintf("%s (x%d): %s", e.Reason, max(e.Count, 1), e.Message))
	}
	return evs
}
