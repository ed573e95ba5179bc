package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// manifests reads the YAML documents of deploy/kubernetes/NAME, each
// decoded strictly (no field the API does not have) into the API type its
// kind names.
func manifests(t *testing.T, name string) []any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []any
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var obj any
		switch doc["kind"] {
		case "Namespace":
			obj = &corev1.Namespace{}
		case "ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "RuntimeClass":
			obj = &nodev1.RuntimeClass{}
		default:
			t.Fatalf("%s: a %v the test does not know", name, doc["kind"])
		}
		js, _ := json.Marshal(doc)
		jd := json.NewDecoder(bytes.NewReader(js))
		jd.DisallowUnknownFields()
		if err := jd.Decode(obj); err != nil {
			t.Fatalf("%s: %v: %v", name, doc["kind"], err)
		}
		out = append(out, obj)
	}
}

// TestRuntimeClassManifest: the RuntimeClass uses the installer's handler,
// schedules on the label the installer puts, and counts the pod's shim.
func TestRuntimeClassManifest(t *testing.T) {
	objs := manifests(t, "runtimeclass.yaml")
	rc, ok := objs[0].(*nodev1.RuntimeClass)
	if len(objs) != 1 || !ok {
		t.Fatalf("runtimeclass.yaml: %v", objs)
	}
	if rc.Handler != Handler {
		t.Errorf("handler %q, want %q", rc.Handler, Handler)
	}
	if rc.Scheduling == nil || rc.Scheduling.NodeSelector[NodeLabel] != NodeLabelValue {
		t.Errorf("scheduling %+v, want the node selector %s=%s", rc.Scheduling, NodeLabel, NodeLabelValue)
	}
	// A CRI pod's shim with one idle Wasm container: up to 22.2 MB
	// (BENCHMARKS.md; integration's TestRuntimeClassOverhead measures it
	// against the manifest).
	shim := resource.MustParse("22200000")
	if rc.Overhead == nil || rc.Overhead.PodFixed.Memory().Cmp(shim) < 0 {
		t.Errorf("overhead %+v, want podFixed memory of at least a pod's shim's 22.2 MB", rc.Overhead)
	}
}

// TestInstallerManifests: the installer's and the uninstaller's DaemonSets
// run the installer with arguments it takes, the node's root mounted where
// --host-root says, privileged, with NODE_NAME for --label-node, as a
// service account the RBAC lets get and patch nodes and nothing more.
func TestInstallerManifests(t *testing.T) {
	objs := append(manifests(t, "installer.yaml"), manifests(t, "uninstaller.yaml")...)
	var sa *corev1.ServiceAccount
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	var sets []*appsv1.DaemonSet
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			sa = o
		case *rbacv1.ClusterRole:
			role = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		case *appsv1.DaemonSet:
			sets = append(sets, o)
		}
	}
	if sa == nil || role == nil || binding == nil || len(sets) != 2 {
		t.Fatalf("service account %v, role %v, binding %v, %d DaemonSets", sa, role, binding, len(sets))
	}
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"nodes"}) || !slices.Equal(role.Rules[0].Verbs, []string{"get", "patch"}) {
		t.Errorf("the installer's role %+v: want get and patch of nodes only", role.Rules)
	}
	if binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("the binding %+v does not bind %s to %s/%s", binding, role.Name, sa.Namespace, sa.Name)
	}
	want := map[string]string{"installer": "install", "uninstaller": "uninstall"}
	for _, ds := range sets {
		spec := ds.Spec.Template.Spec
		if ds.Namespace != sa.Namespace || spec.ServiceAccountName != sa.Name {
			t.Errorf("%s: runs as %s/%s, want %s/%s", ds.Name, ds.Namespace, spec.ServiceAccountName, sa.Namespace, sa.Name)
		}
		if len(spec.Containers) != 1 {
			t.Fatalf("%s: %d containers", ds.Name, len(spec.Containers))
		}
		ctr := spec.Containers[0]
		if len(ctr.Command) < 2 || ctr.Command[0] != "/"+Installer {
			t.Fatalf("%s: command %q", ds.Name, ctr.Command)
		}
		c, err := parseCommand(ctr.Command[1:], io.Discard)
		if err != nil {
			t.Fatalf("%s: the installer refuses its command %q: %v", ds.Name, ctr.Command, err)
		}
		// The installer stays as the node agent; the uninstaller stays.
		stays := c.stay
		if ds.Name == "installer" {
			stays = c.agent
		}
		if c.name != want[ds.Name] || !c.restart || !stays || c.node != "$(NODE_NAME)" {
			t.Errorf("%s: %+v, want %s --restart --label-node=$(NODE_NAME) and --agent (installer) or --stay (uninstaller)", ds.Name, c, want[ds.Name])
		}
		var nodeName bool
		for _, e := range ctr.Env {
			nodeName = nodeName || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}
		if !nodeName {
			t.Errorf("%s: no NODE_NAME from spec.nodeName", ds.Name)
		}
		if ctr.SecurityContext == nil || ctr.SecurityContext.Privileged == nil || !*ctr.SecurityContext.Privileged {
			t.Errorf("%s: not privileged", ds.Name)
		}
		var hostRoot bool
		for _, m := range ctr.VolumeMounts {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/" && m.MountPath == c.root && !m.ReadOnly {
					hostRoot = true
				}
			}
		}
		if !hostRoot {
			t.Errorf("%s: the node's / is not mounted writable at --host-root %s", ds.Name, c.root)
		}
		if ctr.Resources.Limits.Memory().IsZero() || !strings.Contains(ctr.Image, "installer") {
			t.Errorf("%s: no memory limit, or image %q", ds.Name, ctr.Image)
		}
	}
}

// TestKustomization: the kustomize base renders the installer and the
// RuntimeClass, and an overlay's image and namespace reach every object
// that names them (the DaemonSet's image, the service account and the
// binding's subject, the Namespace object itself).
func TestKustomization(t *testing.T) {
	fsys := filesys.MakeFsInMemory()
	base, err := filepath.Abs(filepath.Join("..", "..", "deploy", "kubernetes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kustomization.yaml", "installer.yaml", "runtimeclass.yaml"} {
		data, err := os.ReadFile(filepath.Join(base, name))
		if err != nil {
			t.Fatal(err)
		}
		fsys.WriteFile(filepath.Join("/base", name), data)
	}
	fsys.WriteFile("/overlay/kustomization.yaml", []byte(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [../base]
namespace: wasm-system
images:
  - name: ghcr.io/containerd-shim-wasm/installer
    newName: registry.example/wasm/installer
    newTag: v1.2.3
`))
	for _, dir := range []string{"/base", "/overlay"} {
		resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, dir)
		if err != nil {
			t.Fatalf("kustomize %s: %v", dir, err)
		}
		out, err := resMap.AsYaml()
		if err != nil {
			t.Fatal(err)
		}
		text := string(out)
		for _, kind := range []string{"kind: Namespace", "kind: ServiceAccount", "kind: ClusterRole\n", "kind: ClusterRoleBinding", "kind: DaemonSet", "kind: RuntimeClass"} {
			if !strings.Contains(text, kind) {
				t.Errorf("%s renders no %s", dir, strings.TrimSpace(kind))
			}
		}
		if dir == "/overlay" {
			if !strings.Contains(text, "image: registry.example/wasm/installer:v1.2.3") || strings.Contains(text, "ghcr.io") {
				t.Errorf("the overlay's image did not replace the base's:\n%s", text)
			}
			if strings.Contains(text, "containerd-shim-wasm\n") || strings.Count(text, "namespace: wasm-system") < 3 || !strings.Contains(text, "kind: Namespace\nmetadata:\n  name: wasm-system\n") {
				t.Errorf("the overlay's namespace did not reach the service account, the binding's subject and the DaemonSet:\n%s", text)
			}
		}
	}
}
